"""The engine on a model-free problem: exact resume, keep-last-K-plus-best, shape checks, metrics files."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.data.batches import epoch_batches
from jaxdl.errors import UsageError
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step
from jaxdl.train.step import ema_extras

N, D = 96, 5


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = (x @ rng.normal(size=(D,)) > 0).astype(np.int32)
    return {"x": x, "y": y}


def _loss(params, batch, rng):
    logits = batch["x"] @ params["w"] + params["b"]
    noise = 1e-3 * jax.random.normal(rng, logits.shape)  # uses the step key: resume must reproduce it
    logits = logits + noise
    loss = jnp.mean(jnp.logaddexp(0.0, logits) - batch["y"] * logits)
    acc = jnp.mean((logits > 0) == (batch["y"] == 1))
    return loss, {"loss": loss, "accuracy": acc}


def _run(workdir, epochs, width=D, evaluations=None, ema=False, **overrides):
    """ema: also keep an EMA of the params in state.extras (so a resume must restore extras too)."""
    data = _data()
    cfg = TrainConfig(epochs=epochs, batch_size=overrides.pop("batch_size", 16), workdir=str(workdir), lr=0.05, log_every=2, **overrides)
    opt = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay)
    params = {"w": jnp.zeros((width,)), "b": jnp.zeros(())}
    state = TrainState.create(params, opt, cfg.seed, extras=ema_extras(params) if ema else None)
    scores = iter(evaluations or [])

    def evaluate(params):
        acc = next(scores, None)
        if acc is None:
            acc = float(np.mean(((data["x"] @ np.asarray(params["w"])) > 0) == (data["y"] == 1)))
        return {"loss": 0.0, "accuracy": acc}

    return fit(state, make_train_step(_loss, opt, ema_decay=0.9 if ema else None),
               epoch_batches(data, 16, cfg.seed),
               N // 16, evaluate, cfg, best_metric="accuracy", best_mode="max")


def _assert_same_state(want, got):
    """Every leaf of the TrainState (params, optimizer state, step, RNG key, extras, counters): same tree,
    dtypes, shapes and bits."""
    want_leaves, want_tree = jax.tree_util.tree_flatten_with_path(want)
    got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(got)
    assert want_tree == got_tree
    fields = {path[0].name for path, _ in want_leaves}
    assert fields >= {"params", "opt_state", "step", "rng", "extras"}, fields  # nothing escapes the comparison
    assert any(jax.tree_util.keystr(path).startswith(".extras['ema']") for path, _ in want_leaves)
    for (path, a), (_, b) in zip(want_leaves, got_leaves):
        a, b = np.asarray(jax.device_get(a)), np.asarray(jax.device_get(b))
        assert (a.dtype, a.shape) == (b.dtype, b.shape), jax.tree_util.keystr(path)
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def _metrics_lines(workdir):
    """metrics.jsonl's lines: loss and accuracy are float64 means of the same float32 step values, in
    the same order, so an exact resume writes the same bytes."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["split"] in ("train", "test") for line in lines)
    return lines


def test_two_epochs_equal_one_plus_one_resumed(tmp_path):
    straight = _run(tmp_path / "a", 2, ema=True)
    _run(tmp_path / "b", 1, ema=True)
    resumed = _run(tmp_path / "b", 2, ema=True)
    assert straight.steps == resumed.steps == 12
    _assert_same_state(straight.state, resumed.state)
    assert int(resumed.state.step) == 12
    assert _metrics_lines(tmp_path / "b") == _metrics_lines(tmp_path / "a")
    assert len(_metrics_lines(tmp_path / "a")) == 4  # train and test, each epoch


@pytest.mark.parametrize("epochs, dropped, resumed_at", [(1, 6, 4), (2, 12, 8)])
def test_resume_mid_epoch_from_step_checkpoint(tmp_path, epochs, dropped, resumed_at, capsys):
    """Killed after a mid-epoch checkpoint (its epoch-end one removed), then rerun: the same state, bit for bit,
    and the same metrics.jsonl as a run never interrupted (in the first epoch, and in the second, after the
    first epoch's lines)."""
    straight = _run(tmp_path / "a", epochs, ema=True)
    part = _run(tmp_path / "b", epochs, ema=True, checkpoint_every=4)
    shutil.rmtree(tmp_path / "b" / "checkpoints" / str(dropped))  # the latest is now mid-epoch
    capsys.readouterr()
    resumed = _run(tmp_path / "b", epochs, ema=True)
    assert f"Resuming from step {resumed_at}" in capsys.readouterr().out
    assert part.steps == resumed.steps == straight.steps == 6 * epochs
    _assert_same_state(straight.state, resumed.state)
    assert _metrics_lines(tmp_path / "b") == _metrics_lines(tmp_path / "a")


def test_keeps_last_k_and_the_best(tmp_path):
    _run(tmp_path, 5, keep_checkpoints=2, evaluations=[0.5, 0.9, 0.6, 0.55, 0.52])
    kept = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
    assert kept == [12, 24, 30]  # step 12 had the best accuracy; 24 and 30 are the last two


def test_metrics_files_and_curves(tmp_path):
    result = _run(tmp_path, 2)
    events = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [(e["split"], e["epoch"]) for e in events] == [("train", 1), ("test", 1), ("train", 2), ("test", 2)]
    assert all(np.isfinite(e["loss"]) for e in events)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # Timings: no bound on a speed holds on a busy machine, so they are checked for being there, finite, and
    # consistent: compile (the first call less a steady step: 0 or more) and the steady steps (at least the
    # 11 after the first, 16 examples each) were timed in disjoint spans inside the wall-clock span.
    assert np.isfinite(result.compile_seconds) and result.compile_seconds >= 0
    assert np.isfinite(result.train_examples_per_sec) and result.train_examples_per_sec > 0
    steady_seconds = 11 * 16 / result.train_examples_per_sec
    assert result.compile_seconds + steady_seconds <= result.wall_seconds * (1 + 1e-9)


def test_checkpoint_of_another_shape_is_refused_untouched(tmp_path):
    _run(tmp_path, 1)
    before = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(tmp_path) for p in fs}
    metrics_before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(UsageError, match=r"different model or optimizer \(params/w: saved \(5,\), this run \(7,\)\)"):
        _run(tmp_path, 2, width=7)
    after = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(tmp_path) for p in fs}
    assert before == after and (tmp_path / "metrics.jsonl").read_text() == metrics_before


def test_finished_run_is_not_retrained(tmp_path, capsys):
    first = _run(tmp_path, 1)
    again = _run(tmp_path, 1)
    assert again.steps == first.steps and again.compile_seconds is None
    assert "raise --epochs to continue" in capsys.readouterr().out


def test_corrupt_only_checkpoint_is_a_usage_error(tmp_path):
    _run(tmp_path, 1)
    (tmp_path / "checkpoints" / "6" / "state" / "_METADATA").write_text("{not json")
    with pytest.raises(UsageError, match="cannot be read .* no earlier one"):
        _run(tmp_path, 2)
    assert _kept(tmp_path) == [6]  # left in place


def _kept(workdir):
    return sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())


def test_the_best_survives_a_resume(tmp_path):
    _run(tmp_path, 1, keep_checkpoints=1, evaluations=[0.9])
    _run(tmp_path, 4, keep_checkpoints=1, evaluations=[0.5, 0.4, 0.3])
    assert _kept(tmp_path) == [6, 24]


def test_the_best_is_kept_when_step_checkpoints_land_on_epoch_ends(tmp_path):
    _run(tmp_path, 4, keep_checkpoints=1, checkpoint_every=3, evaluations=[0.9, 0.5, 0.4, 0.3])
    assert _kept(tmp_path) == [6, 24]


def test_resuming_with_another_batch_size_or_seed_is_refused(tmp_path):
    _run(tmp_path, 1)
    with pytest.raises(UsageError, match="--batch-size 16 -> 32"):
        _run(tmp_path, 2, batch_size=32)
    with pytest.raises(UsageError, match="--seed 0 -> 1"):
        _run(tmp_path, 2, seed=1)
