"""MLPs from first principles: XOR, a sine fit, digits; activations compared; many models in one step.

    python experiments/mlp.py --task xor                     # binary cross-entropy; decision_boundary.png
    python experiments/mlp.py --task sine                    # regression (MSE); fit.png
    python experiments/mlp.py --task digits --backprop manual
    python experiments/mlp.py --task digits --ensemble 8     # 8 seeds, one vmapped step, one compile
    python experiments/mlp.py --task digits --norm batch     # batch norm before each hidden activation
    python experiments/mlp.py --task sine --lrs 1e-3,3e-3,1e-2,3e-2   # a learning-rate sweep, one step
    python experiments/mlp.py --task sine --compare-activations   # activations.png

Writes --workdir like every experiment: summary.json, metrics.jsonl, checkpoints/, curves.png.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdl import runtime  # noqa: E402

runtime.configure(__file__)  # before jax is imported (and where run as a script, with huge pages)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdl import cli, plots  # noqa: E402
from jaxdl.cli import field  # noqa: E402
from jaxdl.data.batches import cycled_batches, stacked  # noqa: E402
from jaxdl.data.tabular import TASKS, load_vectors  # noqa: E402
from jaxdl.data.augment import ImagePreprocess  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.train.warm_start import warm_start  # noqa: E402
from jaxdl.models.mlp import ACTIVATIONS, MLP  # noqa: E402
from jaxdl.tasks.model_state import check_norm  # noqa: E402
from jaxdl.tasks.run_info import classifier_info, vector_info  # noqa: E402
from jaxdl.tasks.vector import LOSS_FOR_TASK, VectorTask  # noqa: E402
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step  # noqa: E402
from jaxdl.train.config import run_name  # noqa: E402
from jaxdl.train.flops import speed_note  # noqa: E402
from jaxdl.train.metrics import device_description, write_summary  # noqa: E402
from jaxdl.train.state import num_params, stack_states, unstack_state  # noqa: E402

COMPARED = ("sigmoid", "relu", "tanh", "gelu", "silu")


@dataclasses.dataclass
class Config(TrainConfig):
    task: str = field("xor", "xor (binary, BCE) | sine (regression, MSE) | digits (10 classes, softmax CE)")
    activation: str = field("tanh", "sigmoid | relu | tanh | gelu | silu | identity (no hidden non-linearity)")
    hidden: str = field("64,64", "hidden layer widths, comma-separated")
    backprop: str = field("autodiff", "autodiff (jax.grad) | manual (the chain rule by hand)")
    norm: str = field("none", "none | batch (batch norm before each hidden activation)")
    ensemble: int = field(1, "train N models at once in one vmapped step, seeds seed..seed+N-1")
    lrs: str = field("", "a learning-rate sweep in one vmapped step: one model per rate (e.g. 1e-3,1e-2), same seed")
    compare_activations: bool = field(False, "train every activation and plot their loss curves together")
    steps_per_epoch: int = field(100, "training steps between evaluations")
    epochs: int = field(20, "evaluations (each after --steps-per-epoch steps)", resume="length")
    lr: float = field(1e-2, "peak learning rate")
    weight_decay: float = field(0.0, "L2 for adam/sgd/rmsprop, decoupled decay for adamw")

    def default_workdir(self) -> str:
        how = "activations" if self.compare_activations else self.changed("activation")
        return run_name("mlp", self.task, how, self.changed("backprop"), "batchnorm" if self.norm == "batch" else "",
                        f"ensemble{self.ensemble}" if self.ensemble > 1 else "", "lrs" if self.lrs else "")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task not in TASKS:
            raise UsageError(f"unknown --task {self.task!r}: use one of {', '.join(TASKS)}")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"unknown --activation {self.activation!r}: use one of {', '.join(ACTIVATIONS)}")
        if self.backprop not in ("autodiff", "manual"):
            raise UsageError(f"--backprop must be autodiff or manual, got {self.backprop!r}")
        check_norm(self.norm)
        if self.norm != "none" and self.backprop == "manual":
            raise UsageError("--backprop manual differentiates dense layers and activations only: use --norm none "
                             "or --backprop autodiff")
        if self.norm != "none" and self.batch_size < 2:
            raise UsageError(f"--norm {self.norm} needs batches of at least 2 examples, got --batch-size {self.batch_size}")
        if self.ensemble < 1:
            raise UsageError(f"--ensemble must be >= 1, got {self.ensemble}")
        if self.ensemble > 1024:
            raise UsageError(f"--ensemble must be at most 1,024 (models trained at once), got {self.ensemble:,}")
        if self.steps_per_epoch < 1:
            raise UsageError(f"--steps-per-epoch must be >= 1, got {self.steps_per_epoch}")
        if self.steps_per_epoch > 100_000:  # an epoch's curve point and checkpoint at least that often
            raise UsageError(f"--steps-per-epoch must be at most 100,000, got {self.steps_per_epoch:,}: "
                             "raise --epochs instead")
        widths = self.widths  # parse now, so a bad --hidden or --lrs stops before anything runs
        if len(widths) > 1024 or max(widths) > 2 ** 14:
            raise UsageError(f"--hidden allows at most 1024 layers of at most {2 ** 14:,} units, got "
                             f"{len(widths)} layers, the widest {max(widths):,}")
        rates = self.learning_rates
        if len(rates) > 1024 or not np.isfinite(rates).all():
            raise UsageError(f"--lrs wants at most 1024 finite learning rates, got {cli.shown(self.lrs)}")
        if self.seed + self.ensemble > 2 ** 32:
            raise UsageError(f"--ensemble {self.ensemble} from --seed {self.seed} passes seed {2 ** 32 - 1}: "
                             "lower --seed")
        if self.init_from and self.ensemble > 1:
            raise UsageError("--init-from gives every model the same start, which an --ensemble must not have: "
                             "drop one of them")
        if self.lrs and self.ensemble > 1:
            raise UsageError("--lrs and --ensemble both set the number of models: use one of them")
        if self.lrs and (self.schedule != "constant" or self.warmup_steps):
            raise UsageError("--lrs needs --schedule constant and no warmup (each model's rate is a constant)")

    @property
    def learning_rates(self) -> list[float]:
        if not self.lrs:
            return [self.lr] * self.ensemble
        try:
            rates = [float(r) for r in self.lrs.split(",")]
        except ValueError:
            raise UsageError(f"--lrs wants comma-separated learning rates such as 1e-3,1e-2, got {self.lrs!r}") from None
        if any(not r > 0 for r in rates):
            raise UsageError(f"--lrs must all be > 0, got {self.lrs!r}")
        return rates

    @property
    def widths(self) -> tuple[int, ...]:
        try:
            widths = tuple(int(w) for w in self.hidden.split(","))
        except ValueError:
            raise UsageError(f"--hidden wants comma-separated widths such as 64,64, got {self.hidden!r}") from None
        if any(w < 1 for w in widths):
            raise UsageError(f"--hidden widths must be >= 1, got {self.hidden!r}")
        return widths


def train_one(cfg: Config, activation: str, workdir: str) -> dict:
    t0 = time.perf_counter()
    data = load_vectors(cfg.task)
    task = VectorTask(MLP(cfg.widths, data.outputs, activation, cfg.norm), LOSS_FOR_TASK[cfg.task], cfg.backprop)
    lrs = cfg.learning_rates
    seeds = [cfg.seed] * len(lrs) if cfg.lrs else [cfg.seed + i for i in range(cfg.ensemble)]
    many = len(seeds) > 1
    batch_size = min(cfg.batch_size, len(data.train["x"]))
    optimizers = [make_optimizer(cfg.optimizer, lr, cfg.weight_decay, momentum=cfg.momentum, schedule=cfg.schedule,
                                 warmup_steps=cfg.warmup_steps, total_steps=cfg.epochs * cfg.steps_per_epoch,
                                 clip_norm=cfg.clip_norm, hyperparams_as_data=bool(cfg.lrs)) for lr in lrs]
    optimizer = optimizers[0]  # with --lrs, each model's rate lives in its own optimizer state
    inits = [task.init(jax.random.key(s), data.train) for s in seeds]
    info = _describe(cfg, task, inits[0], data, len(seeds))
    if cfg.warm_start_from():  # one start for every model of an --lrs sweep (--ensemble is refused)
        init = lambda m: VectorTask(m, task.loss_name).init(jax.random.key(cfg.seed), data.train)
        inits = [warm_start(cfg.warm_start_from(), inits[0], info, init, task.model)] * len(seeds)
    states = [TrainState.create(params, opt, s) for params, s, opt in zip(inits, seeds, optimizers)]

    streams = [cycled_batches(data.train, batch_size, s) for s in seeds]
    batches = stacked(streams) if many else streams[0]

    run_cfg = dataclasses.replace(cfg, workdir=workdir)
    result = fit(stack_states(states) if many else states[0],
                 make_train_step(task.loss, optimizer, grad_fn=task.step_grad_fn, many=many), batches,
                 cfg.steps_per_epoch, lambda p: task.evaluate(p, data.test, many), run_cfg,
                 best_metric=task.main_metric, best_mode="min" if task.main_metric == "mse" else "max", many=many,
                 resolved={"activation": activation},
                 describe=info)

    first = unstack_state(result.state, 0) if many else result.state
    _pictures(cfg.task, task, first.params, data, workdir, activation)
    main = np.asarray(result.eval_metrics[task.main_metric], np.float64)
    summary = {f"test_{task.main_metric}": float(main.mean()), "test_loss": float(np.mean(result.eval_metrics["loss"])),
               "activation": activation, "hidden": list(cfg.widths), "backprop": cfg.backprop,
               "compile_seconds": result.compile_seconds, "train_examples_per_sec": result.train_examples_per_sec,
               "model_flops_per_example": result.flops_per_example, "mfu": result.mfu,
               "matmul_peak_gflops": result.matmul_peak_gflops,
               "num_params": num_params(first.params), "steps": result.steps, "dataset": cfg.task,
               "device": device_description(), "wall_seconds": time.perf_counter() - t0}
    if many:
        summary.update(ensemble_mean=float(main.mean()), ensemble_std=float(main.std()), seeds=seeds, lrs=lrs,
                       **{f"per_model_test_{task.main_metric}": main.tolist(),
                          "per_model_test_loss": np.asarray(result.eval_metrics["loss"]).tolist()})
    write_summary(workdir, summary)
    return summary


def _describe(cfg: Config, task: VectorTask, params, data, members: int) -> dict:
    """model.json: digits is an image classifier (8x8 grey pixels / 255, flattened); xor and sine are vectors."""
    if cfg.task == "digits":
        pixels = ImagePreprocess(8, 1, (0.0,), (1.0,))  # the features are the pixels over 255
        return classifier_info(task.model, params, pixels, "digits", [str(i) for i in range(10)], (8, 8, 1),
                               flatten=True, members=members)
    return vector_info(task.model, params, cfg.task, task.loss_name, data.train["x"].shape[1], members)


def _pictures(name: str, task: VectorTask, params, data, workdir: str, activation: str) -> None:
    if name == "xor":
        predict = lambda x: jax.nn.sigmoid(task.model.apply(params, x))[:, 0]
        plots.decision_boundary(predict, data.test["x"], data.test["y"][:, 0],
                                os.path.join(workdir, "decision_boundary.png"), f"XOR, {activation}")
    elif name == "sine":
        fitted = np.asarray(task.model.apply(params, data.test["x"]))
        plots.function_fit(data.test["x"][:, 0], data.test["y"][:, 0], fitted[:, 0],
                           os.path.join(workdir, "fit.png"), f"sin(x), {activation}")


def main(argv=None) -> dict:
    cfg = cli.parse(Config, argv, __doc__)
    if not cfg.compare_activations:
        summary = train_one(cfg, cfg.activation, cfg.workdir)
    else:
        results = {a: train_one(cfg, a, os.path.join(cfg.workdir, a)) for a in COMPARED}
        plots.compare_curves({a: os.path.join(cfg.workdir, a, "metrics.jsonl") for a in COMPARED},
                             os.path.join(cfg.workdir, "activations.png"))
        key = next(k for k in results[COMPARED[0]] if k.startswith("test_") and k != "test_loss")
        per = lambda k: {a: r[k] for a, r in results.items()}
        trained = lambda k: per(k) if all(r[k] is not None for r in results.values()) else None  # None: keep earlier
        summary = {key: per(key), "test_loss": per("test_loss"), "wall_seconds": per("wall_seconds"),
                   "model_flops_per_example": trained("model_flops_per_example"), "mfu": trained("mfu"),
                   "dataset": cfg.task, "device": device_description()}
        write_summary(cfg.workdir, summary)
        for a in COMPARED:
            print(f"{a:>8}: {key} = {summary[key][a]:.6g}, test loss = {summary['test_loss'][a]:.6g}"
                  f"{speed_note(results[a]['train_examples_per_sec'], 'examples', results[a]['mfu'])}")
    speed = "" if cfg.compare_activations else speed_note(summary["train_examples_per_sec"], "examples", summary["mfu"])
    print(f"summary: {os.path.join(cfg.workdir, 'summary.json')}{speed}")
    return summary


if __name__ == "__main__":
    cli.run(main)
