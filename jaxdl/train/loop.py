"""`fit`: the one training loop, the same for every model family.

Rounds of jitted steps with a tqdm bar, the per-round line, evaluation,
metrics.jsonl, curves.png, checkpoints (every round, every N steps, last K and
the best) and exact resume: rerunning with the same workdir restores the latest
checkpoint, skips the batches already seen in its round and drops the log lines
written after it, so a run killed at any moment and started again ends with the
parameters and metrics of one never interrupted. A round is an epoch
(`config.epochs` of them), or, given `total_steps`, a fixed number of steps
between evaluations (for data without epochs, such as random text windows).

The step runs on `config.mesh` (parallel.py): the state sharded by the FSDP
rule, each batch split over the devices, jitted with those in/out shardings.
SIGTERM/SIGINT save and exit 0 (preemption.py); a run whose steps stay
non-finite `config.max_bad_steps` times in a row raises Diverged.

The step's matrix-multiply FLOPs are counted from its jaxpr (flops.py) before its first call, and
after training set against this device's measured matmul rate: the result's `mfu`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxdl import plots
from jaxdl.errors import Diverged, UsageError
from jaxdl.runtime import is_primary, matmul_peak_gflops
from jaxdl.train import description, flops, parallel, run_config, tensorboard
from jaxdl.train.checkpoint import Checkpoints
from jaxdl.train.input import Batches, TrainInput
from jaxdl.train.config import TrainConfig
from jaxdl.train.metrics import MetricsLog, format_metrics
from jaxdl.train.optim import make_schedule
from jaxdl.train.per_example import private_grad_fn
from jaxdl.train.preemption import StopRequests
from jaxdl.train.profile import StepProfiler
from jaxdl.train.state import TrainState, split_model_state, step_of
from jaxdl.train.step import TrainStep

# params -> metrics: scalars (or, training N models, arrays of shape (N,)); anything else under "outputs"
Evaluate = Callable[[Any], dict[str, Any]]


@dataclasses.dataclass
class FitResult:
    state: TrainState
    eval_metrics: dict[str, Any]  # the last evaluation, scalars and anything else it returned
    steps: int
    compile_seconds: float | None  # None when this invocation trained no step
    train_examples_per_sec: float | None  # steady state: compile and evaluation excluded
    wall_seconds: float
    # Model FLOPs (flops.py: matmuls only, every model of a `many` run), None when this invocation
    # trained no step or the step could not be counted
    flops_per_step: float | None = None
    flops_per_example: float | None = None  # per model when training many: flops_per_step / (models x batch)
    mfu: float | None = None  # model FLOPs utilisation: the steady state's matmul FLOP rate / matmul_peak_gflops
    matmul_peak_gflops: float | None = None  # this device's measured matmul rate for the step's matmul dtype(s)


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The loggable entries: floats, or per-model lists when training many models."""
    return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64)) for k, v in metrics.items() if k != "outputs"}


def _host_metrics(ms: list[dict[str, jax.Array]]) -> list[dict[str, Any]]:
    """Per-step metrics as JSON-able floats (per-model lists when training many): exact for float32."""
    return [{k: np.asarray(v, np.float64).tolist() for k, v in m.items() if k != "outputs"} for m in jax.device_get(ms)]


def _mean_metrics(host: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over the round's steps (per model when training many), in float64."""
    return _metrics({k: np.mean(np.asarray([m[k] for m in host], np.float64), axis=0) for k in host[0]}) if host else {}


def _examples(batch: Any, many: bool) -> int:
    shape = jax.tree.leaves(batch)[0].shape
    return int(shape[0] * shape[1]) if many else int(shape[0])


def _count_flops(train_step: Callable, state: TrainState, batch: Any) -> tuple[dict[str, float] | None, str]:
    """(the step's matmul FLOPs by dtype, '') traced (not run) on the first batch before its first
    call, while the donated state is still alive; or (None, why not) when it cannot be counted (a
    step jax cannot trace abstractly, a while loop of matmuls): a missing figure never stops a run."""
    try:
        return flops.matmul_flops_by_dtype(train_step, state, batch), ""
    except Exception as e:  # noqa: BLE001 - any failure to count only loses the figure
        return None, f"Model FLOPs not counted, so no MFU: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


def _peak_dtype(dtype: str) -> str:
    """The dtype whose matmul rate bounds a matmul of `dtype` (float32 for anything unusual)."""
    return dtype if dtype in ("bfloat16", "float16", "float32", "float64") else "float32"


def _utilisation(flops_by_dtype: dict[str, float] | None, steps: float, seconds: float
                 ) -> tuple[float | None, float | None]:
    """(mfu, the matmul peak in GFLOP/s it is measured against) for `steps` steps in `seconds` (the
    timed examples over the counted step's: the same as the timed steps where batches do not vary).

    mfu is the time the steps' matmuls would take at this device's measured rate for their dtype
    over the time they took: with one dtype, FLOP/s over peak FLOP/s. A mix (bfloat16 matmuls
    beside float32 ones) weighs each dtype's peak by its FLOPs, and the peak returned is that
    weighted (harmonic) mean, so mfu = FLOPs x steps / seconds / peak still holds. The peak is
    measured after training (once per process and dtype), never inside the timed steps.
    """
    if flops_by_dtype is None or not steps or not seconds:
        return None, None
    total = sum(flops_by_dtype.values())
    if not total:
        return 0.0, None
    ideal_s = sum(f / (matmul_peak_gflops(dtype=_peak_dtype(d)) * 1e9) for d, f in flops_by_dtype.items())
    return ideal_s * steps / seconds, total / ideal_s / 1e9


def compile_step(train_step: Callable, state: TrainState, config: TrainConfig, many: bool
                 ) -> tuple[Callable, TrainState, Callable[[Any], Any]]:
    """(step jitted for config.mesh, state placed on it, batch -> global array) for this run.

    A `TrainStep` gets the run's options (stop after max_bad_steps, the private gradient) and the
    mesh's in/out shardings; any other callable is used as given, on the same placed inputs.
    """
    mesh = parallel.make_mesh(config.mesh)
    parallel.check_batch_size(config.batch_size, mesh)  # before anything is written (each batch is checked too)
    shardings = parallel.state_shardings(state, mesh)
    batch_sharding = parallel.batch_sharding(mesh, many)
    if isinstance(train_step, TrainStep):
        options: dict[str, Any] = {"max_bad_steps": config.max_bad_steps}
        if config.dp_clip:
            if train_step.grad_fn is not None:
                raise UsageError("--dp-clip needs gradients by jax.grad; this run computes its own (e.g. --backprop manual)")
            if split_model_state(state.params)[1] is not None:
                raise UsageError("--dp-clip needs each example's own gradient, which batch norm (--norm batch) does "
                                 "not give (an example's output depends on its whole batch): drop one of them")
            options["grad_fn"] = private_grad_fn(train_step.loss_fn, config.dp_clip, config.dp_noise)
        train_step = train_step.replace(**options).jit_for(shardings, batch_sharding, parallel.replicated(mesh))
    elif config.dp_clip:
        raise UsageError("--dp-clip needs the engine's make_train_step")
    to_global = lambda batch, local: parallel.global_batch(batch, batch_sharding, many, local)
    return train_step, parallel.place(state, shardings), to_global


def fit(state: TrainState, train_step: Callable, train_batches: Batches, steps_per_epoch: int,
        evaluate: Evaluate, config: TrainConfig, *, best_metric: str = "loss", best_mode: str = "min",
        many: bool = False, resolved: dict[str, Any] | None = None, total_steps: int | None = None,
        eval_params: Callable[[TrainState], Any] = lambda state: state.params,
        length_flag: str | None = None, describe: dict[str, Any] | None = None) -> FitResult:
    """Train to `config.epochs`, resuming from `config.workdir` if it holds a checkpoint.

    total_steps: train this many steps in all, evaluating every `steps_per_epoch` steps (the last
        round may be shorter).

    train_batches: a `grain.MapDataset` whose element s is step s's batch, as this process's rows
        (jaxdl.data.batches), read by Grain's prefetching iterator whose state every checkpoint
        keeps; or a function `(round, batches to skip) -> global batches` (train/input.py).

    many: the state is stacked (`stack_states`) and batches carry a leading model axis.
    length_flag: the flag that sets the run's length, named when a finished run is rerun (default
        --epochs, or --steps with total_steps).
    eval_params: what `evaluate` is given, e.g. `lambda s: s.extras["ema"]` for an EMA of the params;
        `evaluate` and the returned state see a copy on this process's first device.
    resolved: what the config resolved to once the data was known (e.g. the dataset's name); kept
        with every config field in `config.json` (with the steps per epoch of an epoch-counted run).
        A resume is refused, before anything is written, if any of them differs except where the
        field allows it (run_config.py).
    describe: what the run trains, as JSON data (the task's `run_info`): written to
        `model.json` with the checkpoints' place and ranking, so `jaxdl.load` can use the run; a
        resume whose model.json would differ is refused too.
    """
    t0 = time.perf_counter()
    if describe is not None:
        describe = {"format": description.FORMAT, **describe, "checkpoints": {
            "directory": Checkpoints.absolute(config.checkpoint_dir) if config.checkpoint_dir else None, "best_metric": f"test/{best_metric}", "best_mode": best_mode}}
    by_steps = total_steps is not None
    resolved = {**({} if by_steps else {"steps_per_epoch": steps_per_epoch}), **(resolved or {})}
    if config.resuming():  # the data order and keys depend on every "same" field
        for note in run_config.check(config.workdir, config, resolved):
            print(note)
        if describe is not None:
            description.check(config.workdir, describe)
    train_step, state, to_global = compile_step(train_step, state, config, many)
    ckpt = Checkpoints(config.checkpoint_path(), config.keep_checkpoints,
                       f"test/{best_metric}", best_mode)
    state, loop = ckpt.restore_or(state)  # raises UsageError before anything is written
    step = step_of(state)
    data = TrainInput(train_batches, step, loop.get("data"))
    run_config.write(config.workdir, config, resolved)
    if describe is not None:
        description.write(config.workdir, describe)
    log = MetricsLog(config.workdir)
    log.drop_after(step)  # lines a killed run wrote after its last checkpoint: they are about to be redone
    total = total_steps if by_steps else config.epochs * steps_per_epoch
    # a round's steps reach TensorBoard when it ends: the resumed round's are logged again, the later ones dropped
    board = tensorboard.open_run(config.workdir, step, step - step % steps_per_epoch, config.tensorboard)
    profiler = StepProfiler(config.workdir, config.profile_steps)
    # the learning rate at each step, as make_optimizer schedules it (many models may each have their own)
    learning_rate = None if many else make_schedule(config.lr, config.lr_schedule_flag()[1], config.warmup_steps, total)
    rounds = -(-total // steps_per_epoch)
    name = "Round" if by_steps else "Epoch"
    if step:
        print(f"Resuming from step {step} ({ckpt.directory})")
    first_call_s, compile_s, train_s, examples, timed_steps, eval_metrics = None, None, 0.0, 0, 0, {}
    step_flops, step_examples = None, 0  # the step's matmul FLOPs by dtype, and the examples they cover

    def check_finite(bar: tqdm) -> None:
        if config.max_bad_steps and int(np.max(jax.device_get(state.bad_streak))) >= config.max_bad_steps:
            bar.close()
            ckpt.close()
            raise Diverged(f"the loss or gradients were not finite for {config.max_bad_steps} steps in a row "
                           f"(by step {step}); those updates were skipped and the checkpoints in "
                           f"{ckpt.directory} are intact: lower --lr, add --clip-norm or check the data")

    def stop_now(signal_name: str) -> None:
        ckpt.close()
        print(f"{signal_name}: saved step {step} to {ckpt.directory}; run the same command again to resume.",
              flush=True)
        raise SystemExit(0)

    def end_round(epoch: int, step_metrics: list[dict[str, Any]], round_speed: float | None) -> dict[str, Any]:
        """The round's train line, evaluation, test line, ranked checkpoint, curves and TensorBoard events."""
        train_metrics = _mean_metrics(step_metrics)
        first = epoch * steps_per_epoch  # the round's every step (those before a resume included), 1-based
        counts = np.arange(first, first + len(step_metrics))  # optax's step count before each step
        lrs = None if learning_rate is None else np.broadcast_to(learning_rate(counts), counts.shape)  # constant: a scalar
        for i, m in enumerate(step_metrics):
            board.scalars(first + i + 1, "train", m if lrs is None else {**m, "learning_rate": lrs[i]})
        if round_speed:
            board.scalars(step, "train", {"examples_per_sec": round_speed})
        skipped = int(np.max(jax.device_get(state.skipped)))
        if skipped:
            train_metrics["skipped_steps"] = skipped
        tag = f"[Step {step}]" if by_steps else f"[Epoch {epoch + 1}]"
        where = {"step": step} if by_steps else {"step": step, "epoch": epoch + 1}
        print(f"{tag} {format_metrics(train_metrics)}", flush=True)
        log.write(**where, split="train", **train_metrics)
        eval_metrics = evaluate(parallel.to_local(eval_params(state)))
        scalars = _metrics(eval_metrics)
        if best_metric not in scalars:
            raise ValueError(f"evaluate returned {sorted(scalars)}, not {best_metric!r}: pass fit(best_metric=...)")
        print(f"{tag} {format_metrics(scalars, 'test ')}", flush=True)
        log.write(**where, split="test", **scalars)
        board.scalars(step, "test", scalars)
        outputs = eval_metrics.get("outputs")
        for name, value in (outputs.items() if isinstance(outputs, dict) else ()):
            if isinstance(value, str):  # a sample of generated text
                board.text(step, name, value)
        board.flush()  # before the checkpoint: what it covers is on disk
        ckpt.save(state, {"data": data.state()}, {f"test/{k}": float(np.mean(v)) for k, v in scalars.items()})
        plots.curves(log.path, os.path.join(config.workdir, "curves.png"))
        return eval_metrics

    with StopRequests() as stop:
        for epoch in range(step // steps_per_epoch, rounds if step < total else 0):
            skip = step - epoch * steps_per_epoch
            in_round = min(steps_per_epoch, total - epoch * steps_per_epoch)
            batches = data.round(epoch, skip, in_round - skip)
            bar = tqdm(total=in_round, initial=skip, desc=f"{name} {epoch + 1}/{rounds}",
                       unit="step", dynamic_ncols=True, disable=not is_primary())
            done = list(loop.get("metrics", [])) if loop.get("round") == epoch else []  # from before a resume
            ms: list[dict[str, jax.Array]] = []
            round_examples = 0
            for batch in batches:
                batch = to_global(batch, data.local)
                if first_call_s is None:  # the first call compiles: timed apart from the steady state
                    step_flops, why_not = _count_flops(train_step, state, batch)
                    step_examples = _examples(batch, many)
                    tc = time.perf_counter()
                    state, m = train_step(state, batch)
                    jax.block_until_ready(m)
                    first_call_s = time.perf_counter() - tc
                    if why_not and is_primary():  # said once the step has run: a step that fails says why itself
                        print(why_not)
                    te = time.perf_counter()
                else:
                    if not ms:
                        te = time.perf_counter()
                    with profiler.annotate(step + 1):
                        state, m = train_step(state, batch)
                    profiler.after_step(state)
                    examples += _examples(batch, many)
                    round_examples += _examples(batch, many)
                    timed_steps += 1
                ms.append(m)
                step += 1
                bar.update(1)
                if len(ms) % config.log_every == 0:
                    bar.set_postfix_str(format_metrics(jax.device_get(m)))
                    check_finite(bar)
                signal_name = stop.requested(step)
                # a round's last step is saved after evaluation, with its metrics (and a signal waits for that)
                if len(ms) < in_round - skip and (signal_name or (config.checkpoint_every
                                                                  and step % config.checkpoint_every == 0)):
                    check_finite(bar)
                    ckpt.save(state, {"round": epoch, "metrics": done + _host_metrics(ms), "data": data.state()})
                    if signal_name:
                        bar.close()
                        stop_now(signal_name)
            jax.block_until_ready(state)
            profiler.stop(state)  # a round that ends before N steps are traced ends the trace
            round_s = time.perf_counter() - te if ms else 0.0
            train_s += round_s
            bar.close()
            check_finite(bar)
            eval_metrics = end_round(epoch, done + _host_metrics(ms), round_examples / round_s if round_examples else None)
            if stop.signal_name and epoch + 1 < rounds:
                stop_now(stop.signal_name)
    if not eval_metrics:  # nothing left to train: evaluate what was restored
        flag = length_flag or ("--steps" if by_steps else "--epochs")
        print(f"Already trained {step} of {total} steps; raise {flag} to continue." if step <= total else
              f"Already trained {step} steps, more than the {total} that {flag} asks for: evaluating step {step}.")
        eval_metrics = evaluate(parallel.to_local(eval_params(state)))
    ckpt.close()
    board.flush()
    step_s = train_s / timed_steps if timed_steps else 0.0
    if first_call_s is not None:
        compile_s = max(first_call_s - step_s, 0.0)  # the first call less one steady-state step
    flops_per_step = None if step_flops is None else float(sum(step_flops.values()))
    per_example = flops_per_step / step_examples if flops_per_step is not None and step_examples else None
    mfu, peak = _utilisation(step_flops, examples / step_examples if step_examples else 0, train_s)
    return FitResult(state=parallel.to_local(state), eval_metrics=eval_metrics, steps=step, compile_seconds=compile_s,
                     train_examples_per_sec=examples / train_s if train_s and examples else None,
                     wall_seconds=time.perf_counter() - t0, flops_per_step=flops_per_step,
                     flops_per_example=per_example,
                     mfu=mfu, matmul_peak_gflops=peak)
