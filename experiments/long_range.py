"""Long-range dependencies: RNN, LSTM and GRU on delayed recall over a range of lags; the vanishing gradient measured.

    python experiments/long_range.py                          # rnn, lstm, gru at lags 5..100 -> runs/long_range
    python experiments/long_range.py --lags 200 --cells lstm,gru --steps 2000
    python experiments/long_range.py --seeds 3                # three models per (cell, lag), averaged

Each sequence holds one symbol (of --symbols) `lag` steps before its end and random distractor
tokens (--distractors of them; 0: blanks) everywhere else; the model names the symbol from its
final state. (With blanks nothing disturbs the state after the symbol, and a plain RNN can keep it
in one of several fixed points of its blank-input dynamics, found by luck more than by gradient:
its accuracy then jumps between lags and seeds. The distractors make memory a learned skill.) Every lag is padded to the longest lag
+ 1 steps, so one cell's models at every lag (and seed) train at once in one vmapped step, one
compile, with the same budget (--steps, --batch-size, --lr, --hidden) for every cell.

Writes --workdir: accuracy_vs_lag.png; gradient_vs_distance.png (the norm of d loss / d h_{T-1-k}
against k, at initialisation and after training, for the model at the longest lag); summary.json
(`longest_lag_solved` per cell at --solved-accuracy, `accuracy` per cell and lag); and one folder
per cell with its metrics.jsonl, checkpoints/ and curves.png. Running the same command again resumes.
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
from jaxdl.cli import field, fixed  # noqa: E402
from jaxdl.data import delayed_recall  # noqa: E402
from jaxdl.data.batches import stacked  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.models.recurrent import CELLS, SequenceClassifier  # noqa: E402
from jaxdl.tasks.long_range import RecallTask, hidden_gradient_norms  # noqa: E402
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step  # noqa: E402
from jaxdl.train.config import run_name  # noqa: E402
from jaxdl.train.metrics import device_description, write_summary  # noqa: E402
from jaxdl.train.state import num_params, stack_states, unstack_state  # noqa: E402

MOST = {"lags": 10_000, "symbols": 2 ** 14, "distractors": 2 ** 14, "hidden": 2 ** 14, "embed": 2 ** 14,
        "seeds": 1024, "test_examples": 10 ** 6, "probe_examples": 10 ** 5, "eval_every": 10 ** 6}


def _int_list(flag: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} wants comma-separated whole numbers such as 5,10,20, got {cli.shown(text)}") from None
    return values


@dataclasses.dataclass
class Config(TrainConfig):
    lags: str = field("5,10,20,50,100", "steps between the symbol and the end of the sequence, comma-separated")
    cells: str = field("rnn,lstm,gru", "the cells compared, comma-separated: rnn (tanh) | lstm | gru", resume="free")
    symbols: int = field(8, "symbols to recall (chance accuracy is 1 / symbols)")
    distractors: int = field(8, "distinct distractor tokens filling the other steps (0 = blanks)")
    hidden: int = field(64, "hidden units of the recurrent layer (every cell)")
    embed: int = field(16, "token embedding width")
    embed_std: float = field(1.0, "the embeddings start as N(0, std^2) (as the language model's)")
    forget_bias: float = field(1.0, "added to the LSTM's forget-gate bias at the start (0 = PyTorch's start)")
    seeds: int = field(1, "models per (cell, lag), seeds seed..seed+N-1; accuracies are their mean")
    steps: int = field(1000, "training steps of every model; a larger value continues a finished run", resume="length")
    eval_every: int = field(250, "evaluate every lag and checkpoint every N steps")
    test_examples: int = field(512, "held-out sequences per lag")
    probe_examples: int = field(64, "sequences the hidden-state gradient is averaged over", resume="free")
    solved_accuracy: float = field(0.9, "the test accuracy that counts as solving a lag", resume="free")
    batch_size: int = field(32, "sequences per training step (per model)")
    lr: float = field(3e-3, "peak learning rate")
    weight_decay: float = field(0.0, "L2 for adam/sgd/rmsprop, decoupled decay for adamw")
    clip_norm: float = field(1.0, "clip gradients to this global norm; 0 = off")
    epochs: int = fixed(1)  # counted in --steps: the sequences are generated, there are no epochs

    def default_workdir(self) -> str:
        return run_name("long_range")

    def __post_init__(self) -> None:
        super().__post_init__()
        lags = self.lag_list  # parsed now, so a bad --lags or --cells stops before anything runs
        if len(set(lags)) < len(lags) or any(not 1 <= lag <= MOST["lags"] for lag in lags):
            raise UsageError(f"--lags wants distinct lags in 1..{MOST['lags']:,}, got {cli.shown(self.lags)}")
        cells = self.cell_list
        if len(set(cells)) < len(cells):
            raise UsageError(f"--cells names a cell twice: {cli.shown(self.cells)}")
        for name in ("symbols", "hidden", "embed", "seeds", "steps", "eval_every", "test_examples", "probe_examples"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.distractors < 0:
            raise UsageError(f"--distractors must be >= 0, got {self.distractors}")
        for name, most in MOST.items():
            if name != "lags" and getattr(self, name) > most:
                raise UsageError(f"--{name.replace('_', '-')} must be at most {most:,}, got {getattr(self, name):,}: "
                                 "lower it")
        if self.symbols < 2:
            raise UsageError(f"--symbols must be >= 2 (one symbol needs no memory), got {self.symbols}")
        if len(lags) * self.seeds > 1024:
            raise UsageError(f"--lags x --seeds is {len(lags) * self.seeds:,} models per cell, more than 1,024: "
                             "fewer lags or seeds")
        if self.seed + self.seeds > 2 ** 32:
            raise UsageError(f"--seeds {self.seeds} from --seed {self.seed} passes seed {2 ** 32 - 1}: lower --seed")
        if not 0 < self.embed_std <= 100:
            raise UsageError(f"--embed-std must be in (0, 100], got {self.embed_std}")
        if not -100 <= self.forget_bias <= 100:
            raise UsageError(f"--forget-bias must be in [-100, 100] (a gate is shut or open well before), "
                             f"got {self.forget_bias}")
        if not 0 < self.solved_accuracy <= 1:
            raise UsageError(f"--solved-accuracy must be in (0, 1], got {self.solved_accuracy}")
        if self.init_from:
            raise UsageError("--init-from: every model here starts from its seed; train without it")

    @property
    def lag_list(self) -> list[int]:
        return _int_list("--lags", self.lags)

    @property
    def cell_list(self) -> list[str]:
        cells = self.cells.split(",")
        bad = [c for c in cells if c not in CELLS]
        if bad:
            raise UsageError(f"unknown --cells {cli.shown(self.cells)}: use some of {', '.join(CELLS)}, comma-separated")
        return cells

    @property
    def length(self) -> int:
        """Every lag's sequences are padded to this many steps (the symbol at step length - 1 - lag)."""
        return max(self.lag_list) + 1


def _data(cfg: Config, lag: int, seed: int, n: int | None = None) -> dict[str, np.ndarray]:
    return delayed_recall.test_set(n or cfg.test_examples, lag, cfg.length, cfg.symbols, cfg.distractors, seed)


def train_cell(cfg: Config, cell: str, workdir: str) -> dict:
    """Every (lag, seed) model of one cell, in one vmapped step; -> the cell's results."""
    lags, seeds = cfg.lag_list, [cfg.seed + i for i in range(cfg.seeds)]
    models = [(lag, s) for lag in lags for s in seeds]  # model i: lag models[i][0], seed models[i][1]
    vocab = delayed_recall.vocab_size(cfg.symbols, cfg.distractors)
    task = RecallTask(SequenceClassifier(cfg.symbols, vocab, cell, cfg.embed, cfg.hidden), cfg.embed_std,
                      cfg.forget_bias)
    optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay, momentum=cfg.momentum, schedule=cfg.schedule,
                               warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, clip_norm=cfg.clip_norm)
    example = _data(cfg, lags[0], cfg.seed, 1)
    # the same seed starts the same params at every lag: within a seed only the lag differs
    inits = {s: task.init(jax.random.key(s), example) for s in seeds}
    state = stack_states([TrainState.create(inits[s], optimizer, s) for _, s in models])
    batches = stacked([delayed_recall.train_batches(cfg.batch_size, lag, cfg.length, cfg.symbols, cfg.distractors, s)
                       for lag, s in models])
    tests = [_data(cfg, lag, s) for lag, s in models]
    test_N = {k: np.stack([t[k] for t in tests]) for k in tests[0]}

    result = fit(state, make_train_step(task.loss, optimizer, many=True), batches, cfg.eval_every,
                 lambda params: task.evaluate(params, test_N), dataclasses.replace(cfg, workdir=workdir),
                 best_metric="accuracy", best_mode="max", many=True, total_steps=cfg.steps,
                 resolved={"cell": cell, "length": cfg.length}, length_flag="--steps")

    # the vanishing gradient, measured on the longest lag's model (first seed) and its own test sequences
    longest = models.index((max(lags), seeds[0]))
    probe = _data(cfg, max(lags), seeds[0], cfg.probe_examples)
    trained = unstack_state(result.state, longest).params
    gradients = {"init": hidden_gradient_norms(cell, inits[seeds[0]], probe).tolist(),
                 "trained": hidden_gradient_norms(cell, trained, probe).tolist()}
    accuracy = np.asarray(result.eval_metrics["accuracy"], np.float64).reshape(len(lags), len(seeds))
    loss = np.asarray(result.eval_metrics["loss"], np.float64).reshape(len(lags), len(seeds))
    return {"accuracy": dict(zip(map(str, lags), accuracy.mean(1).tolist())),
            "per_seed_accuracy": dict(zip(map(str, lags), accuracy.tolist())),
            "test_loss": dict(zip(map(str, lags), loss.mean(1).tolist())),
            "gradient_norm_by_distance": gradients, "num_params": num_params(inits[seeds[0]]),
            "compile_seconds": result.compile_seconds, "train_examples_per_sec": result.train_examples_per_sec,
            "steps": result.steps}


def longest_solved(accuracy: dict[str, float], threshold: float) -> int | None:
    """The longest lag whose accuracy reaches the threshold (None: none does)."""
    solved = [int(lag) for lag, a in accuracy.items() if a >= threshold]
    return max(solved) if solved else None


def main(argv=None) -> dict:
    cfg = cli.parse(Config, argv, __doc__)
    t0 = time.perf_counter()
    lags, cells = cfg.lag_list, cfg.cell_list
    results = {c: train_cell(cfg, c, os.path.join(cfg.workdir, c)) for c in cells}
    per = lambda key: {c: r[key] for c, r in results.items()}
    accuracy = per("accuracy")
    chance = 1.0 / cfg.symbols
    plots.accuracy_vs_lag({c: [accuracy[c][str(lag)] for lag in lags] for c in cells}, lags,
                          os.path.join(cfg.workdir, "accuracy_vs_lag.png"), cfg.solved_accuracy, chance)
    gradients = per("gradient_norm_by_distance")
    plots.gradient_vs_distance(gradients, os.path.join(cfg.workdir, "gradient_vs_distance.png"), max(lags))
    at = lambda g: g[max(lags)] / g[0] if g[0] else None  # how much of the last step's gradient reaches the symbol
    filler = f"{cfg.distractors} distractors" if cfg.distractors else "blanks"
    summary = {"longest_lag_solved": {c: longest_solved(accuracy[c], cfg.solved_accuracy) for c in cells},
               "solved_accuracy": cfg.solved_accuracy, "chance_accuracy": chance, "lags": lags,
               "sequence_length": cfg.length, "accuracy": accuracy, "test_loss": per("test_loss"),
               "per_seed_accuracy": per("per_seed_accuracy"), "seeds": [cfg.seed + i for i in range(cfg.seeds)],
               "gradient_ratio_at_longest_lag": {c: {k: at(g) for k, g in gradients[c].items()} for c in cells},
               "gradient_norm_by_distance": gradients,
               "compile_seconds": per("compile_seconds"), "train_examples_per_sec": per("train_examples_per_sec"),
               "num_params": per("num_params"), "hidden": cfg.hidden, "batch_size": cfg.batch_size, "lr": cfg.lr,
               "dataset": f"delayed_recall ({cfg.symbols} symbols, {filler}, length {cfg.length})",
               "device": device_description(), "steps": min(r["steps"] for r in results.values()),
               "wall_seconds": time.perf_counter() - t0}
    write_summary(cfg.workdir, summary)
    _print_table(summary, cells, lags)
    print(f"summary: {os.path.join(cfg.workdir, 'summary.json')}")
    return summary


def _print_table(summary: dict, cells: list[str], lags: list[int]) -> None:
    print(f"\ntest accuracy by lag (solved: >= {summary['solved_accuracy']:.0%}; chance {summary['chance_accuracy']:.1%})")
    print("cell  " + "".join(f"{lag:>8}" for lag in lags) + "   longest solved   grad ratio init -> trained")
    for c in cells:
        ratio = summary["gradient_ratio_at_longest_lag"][c]
        show = lambda r: "n/a" if r is None else f"{r:.1e}"
        print(f"{c:<6}" + "".join(f"{summary['accuracy'][c][str(lag)]:>8.1%}" for lag in lags)
              + f"   {str(summary['longest_lag_solved'][c]):>14}   {show(ratio['init'])} -> {show(ratio['trained'])}")


if __name__ == "__main__":
    cli.run(main)
