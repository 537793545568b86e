"""Preemption and crash resilience, end to end: experiments/cnn.py (and mlp.py) run as real processes,
SIGKILLed, SIGTERMed/SIGINTed or given a damaged newest checkpoint, and started again with the same command.

The promise checked: a run stopped at any moment and started again ends with the parameters and
metrics.jsonl of one never interrupted, bit for bit (data order, dropout/augmentation keys and the
step restored exactly, a half-written checkpoint never read); SIGTERM or SIGINT saves the step it
finishes and exits 0 saying how to resume; an unreadable newest checkpoint is set aside with a warning
naming it and the previous one is used.

Where a kill lands is drawn from `random.Random(seed)`; the seed is in every assertion message and
JAXDL_RESILIENCE_SEED=<seed> replays the same choice (the timing of a real process varies a little).
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.experiments.workdir import latest_params

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 300
# The quickest real run with dropout and augmentation (the step's keys matter): 11 steps an epoch,
# a checkpoint after every step, so kills land in steps, in saves, in evaluations.
CNN = [sys.executable, "experiments/cnn.py", "--image-size", "8", "--batch-size", "128", "--epochs", "2",
       "--checkpoint-every", "1", "--log-every", "5"]
TOTAL = 2 * (1437 // 128)  # digits: 1,437 training images


def _seed() -> int:
    return int(os.environ.get("JAXDL_RESILIENCE_SEED") or random.SystemRandom().randrange(2 ** 31))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The subprocesses' environment: one XLA compilation cache for the module, so only the first run compiles."""
    cache = tmp_path_factory.mktemp("xla-cache")
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", "PYTHONUNBUFFERED": "1"}


class Run:
    """One invocation of a command with `--workdir`; stdout and stderr go to files (no pipe can fill up)."""

    def __init__(self, cmd, workdir, env, name):
        self.workdir = str(workdir)
        logs = os.path.join(os.path.dirname(self.workdir), f"{os.path.basename(self.workdir)}.{name}")
        self._out, self._err = open(logs + ".out", "w+"), open(logs + ".err", "w+")
        self.proc = subprocess.Popen([*cmd, "--workdir", self.workdir], cwd=ROOT, env=env,
                                     stdout=self._out, stderr=self._err, text=True)

    def wait(self):
        """(returncode, stdout, stderr); a run past TIMEOUT_S is killed and fails the test."""
        try:
            self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.workdir}: no exit within {TIMEOUT_S} s\n{self.output()[1][-3000:]}")
        return (self.proc.returncode, *self.output())

    def output(self):
        texts = []
        for f in (self._out, self._err):
            f.flush()
            f.seek(0)
            texts.append(f.read())
        return texts

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.kill()
        self._out.close()
        self._err.close()


def run_to_end(cmd, workdir, env, name="run"):
    run = Run(cmd, workdir, env, name)
    try:
        code, out, err = run.wait()
    finally:
        run.close()
    assert code == 0 and "Traceback" not in err, f"{workdir} ({name}) exited {code}:\n{out[-2000:]}\n{err[-3000:]}"
    return out, err


def saved_steps(workdir):
    ckpt = os.path.join(str(workdir), "checkpoints")
    return sorted(int(s) for s in os.listdir(ckpt) if s.isdigit()) if os.path.isdir(ckpt) else []


def interrupt(cmd, workdir, env, sig, ready, name, delay=0.0):
    """Start `cmd`, wait until `ready(workdir)`, then `delay` seconds more, and send `sig` (the run must
    still be going); returns (code, out, err, the newest checkpoint when the signal was sent)."""
    run = Run(cmd, workdir, env, name)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not ready(workdir):
            assert run.proc.poll() is None, f"{name}: exited {run.proc.returncode} too soon:\n{run.output()[1][-3000:]}"
            assert time.monotonic() < deadline, f"{name}: not ready within {TIMEOUT_S} s"
            time.sleep(0.002)
        time.sleep(delay)
        newest = saved_steps(workdir)[-1] if saved_steps(workdir) else 0
        assert run.proc.poll() is None, f"{name}: the run finished before the signal"
        run.proc.send_signal(sig)
        return (*run.wait(), newest)
    finally:
        run.close()


def at_random_step(cmd, workdir, env, rng, sig, steps):
    """`interrupt` once a random step in `steps` is checkpointed and up to half a second more has passed
    (a few steps at these sizes), so the signal lands in a step, a save, an evaluation or, on a fast
    machine, the run's last step."""
    target, delay = rng.choice(steps), rng.uniform(0.0, 0.5)
    ready = lambda w: bool(saved_steps(w)) and saved_steps(w)[-1] >= target
    return interrupt(cmd, workdir, env, sig, ready, f"{signal.Signals(sig).name}-at-{target}", delay)


def board_scalars(workdir, tag):
    """(step, value) of a TensorBoard scalar as TensorBoard shows it (earlier events past a purge dropped)."""
    ea = EventAccumulator(os.path.join(str(workdir), "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def assert_same_run(workdir, baseline, why):
    """Bit-identical newest params, identical metrics.jsonl, identical final test figures."""
    assert saved_steps(workdir)[-1] == saved_steps(baseline)[-1] == TOTAL, why
    got, want = latest_params(workdir), latest_params(baseline)
    assert jax.tree.structure(got) == jax.tree.structure(want), why
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{jax.tree_util.keystr(path)}: {why}")
    lines = lambda w: open(os.path.join(str(w), "metrics.jsonl")).read().splitlines()
    assert lines(workdir) == lines(baseline), why
    for tag in ("train/loss", "train/accuracy", "train/learning_rate", "test/loss", "test/accuracy"):
        assert board_scalars(workdir, tag) == board_scalars(baseline, tag), f"TensorBoard {tag}: {why}"
    summary = lambda w: json.load(open(os.path.join(str(w), "summary.json")))
    for key in ("test_accuracy", "test_loss", "steps", "epochs"):
        assert summary(workdir)[key] == summary(baseline)[key], f"{key}: {why}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env):
    """The reference: the command run once, start to end."""
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_to_end(CNN, workdir, env)
    assert len(open(workdir / "metrics.jsonl").read().splitlines()) == 4  # train + test, two epochs
    return workdir


def test_sigkill_at_random_then_after_logging_a_round_then_rerun_is_bit_exact(tmp_path, env, uninterrupted):
    """Killed twice: at a random moment, then after the last round's metrics are logged but before its
    checkpoint (those log lines must be dropped and redone, not kept twice); the third start finishes."""
    seed = _seed()
    why = f"seed {seed} (JAXDL_RESILIENCE_SEED={seed} replays it)"
    workdir = tmp_path / "run"
    code, _, err, newest = at_random_step(CNN, workdir, env, random.Random(seed), signal.SIGKILL, range(1, TOTAL - 3))
    assert code == -signal.SIGKILL, f"{why}: exited {code}\n{err[-2000:]}"
    assert not (workdir / "summary.json").exists() and saved_steps(workdir)[-1] < TOTAL, f"{why}: not killed mid-training"
    first = saved_steps(workdir)[-1]  # a save the kill cut short is no checkpoint
    why = f"{why}: killed after step {newest}, resumed from {first}"

    def logged_last_round(w):
        return (w / "metrics.jsonl").exists() and f'"step": {TOTAL},' in (w / "metrics.jsonl").read_text()

    code, out, _, newest = interrupt(CNN, workdir, env, signal.SIGKILL, logged_last_round, "SIGKILL-after-logging")
    assert f"Resuming from step {first} " in out, f"{why}\n{out[-2000:]}"
    assert code == -signal.SIGKILL and TOTAL not in saved_steps(workdir), f"{why}: the second kill missed its window"
    assert logged_last_round(workdir), why
    second = saved_steps(workdir)[-1]

    out, err = run_to_end(CNN, workdir, env, "resumed")
    assert f"Resuming from step {second} " in out, f"{why}, then from {second}\n{out[-2000:]}"
    assert "cannot be read" not in err, why
    assert_same_run(workdir, uninterrupted, f"{why}, then from {second}")


def test_sigterm_or_sigint_saves_the_step_exits_0_and_rerun_is_bit_exact(tmp_path, env, uninterrupted):
    seed = _seed()
    rng = random.Random(seed)
    sig = rng.choice([signal.SIGTERM, signal.SIGINT])
    why = f"seed {seed} (JAXDL_RESILIENCE_SEED={seed} replays it), {sig.name}"
    workdir = tmp_path / "run"
    code, out, err, newest = at_random_step(CNN, workdir, env, rng, sig, range(1, TOTAL - 3))
    assert code == 0 and "Traceback" not in err, f"{why}: exited {code}\n{out[-2000:]}\n{err[-3000:]}"
    said = re.search(rf"{sig.name}: saved step (\d+) to (\S+); run the same command again to resume", out)
    if not said and newest >= TOTAL - 1:  # it landed in the last step: the run ends as it would have
        assert f"{sig.name}: finishing this step" in out and (workdir / "summary.json").exists(), f"{why}\n{out[-2000:]}"
        assert_same_run(workdir, uninterrupted, f"{why}: signalled in the last step")
        return
    assert said, f"{why}: no resume message\n{out[-2000:]}"
    step = int(said.group(1))
    assert said.group(2) == f"{workdir}/checkpoints", why
    assert newest <= step < TOTAL and saved_steps(workdir)[-1] == step, f"{why}: signalled after step {newest}"
    assert not (workdir / "summary.json").exists(), why
    out, err = run_to_end(CNN, workdir, env, "resumed")
    assert f"Resuming from step {step} " in out, f"{why}\n{out[-2000:]}"
    assert_same_run(workdir, uninterrupted, f"{why}: stopped at step {step}")


def test_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, env, uninterrupted):
    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted, workdir)
    steps = saved_steps(workdir)
    assert len(steps) >= 2, steps
    newest, previous = steps[-1], steps[-2]
    state = workdir / "checkpoints" / str(newest) / "state"
    biggest = max((p for p in state.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    size = biggest.stat().st_size
    assert size > 100_000, biggest  # the arrays' data, not a small index
    os.truncate(biggest, size // 2)
    out, err = run_to_end(CNN, workdir, env, "damaged")
    ckpt = os.path.abspath(workdir / "checkpoints")
    warning = f"warning: checkpoint {ckpt}/{newest} cannot be read"
    assert warning in err and f"resuming from step {previous}" in err, err[-3000:]
    assert f"{os.path.abspath(workdir)}/checkpoints.damaged/{newest}" in err, err[-3000:]
    assert f"Resuming from step {previous} " in out, out[-2000:]
    moved = workdir / "checkpoints.damaged" / str(newest) / "state" / biggest.relative_to(state)
    assert moved.stat().st_size == size // 2  # kept for inspection, as it was
    assert_same_run(workdir, uninterrupted, f"newest checkpoint {newest} damaged, resumed from {previous}")


def test_sigterm_on_the_last_step_of_a_round_keeps_that_rounds_metrics(tmp_path, env):
    """With one step a round every step ends a round: the round's evaluation and metrics must still be
    logged, by the stopped run or by the resumed one."""
    seed = _seed()
    why = f"seed {seed} (JAXDL_RESILIENCE_SEED={seed} replays it)"
    epochs = 12
    cmd = [sys.executable, "experiments/mlp.py", "--task", "digits", "--hidden", "16", "--epochs", str(epochs),
           "--steps-per-epoch", "1"]
    workdir = tmp_path / "run"
    code, out, _, _ = at_random_step(cmd, workdir, env, random.Random(seed), signal.SIGTERM, range(2, epochs - 3))
    said = re.search(r"SIGTERM: saved step (\d+) ", out)
    assert code == 0 and said, f"{why}: exited {code}\n{out[-2000:]}"
    run_to_end(cmd, workdir, env, "resumed")
    events = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    logged = [(e["epoch"], e["split"]) for e in events]
    want = [(e, split) for e in range(1, epochs + 1) for split in ("train", "test")]
    assert logged == want, f"{why}: stopped at step {said.group(1)}; missing {sorted(set(want) - set(logged))}"
