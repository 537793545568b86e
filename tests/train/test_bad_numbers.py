"""Non-finite losses and gradients: the update is skipped and counted; K in a row ends the run
(Diverged, exit status 3) with the checkpoints as they were."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import cli
from jaxdl.data.batches import epoch_batches
from jaxdl.errors import Diverged
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step
from jaxdl.train.checkpoint import Checkpoints
from jaxdl.train.metrics import read_events

N, D, B = 64, 4, 16


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.float32)}


def _loss(params, batch, rng):
    logits = batch["x"] @ params["w"] + params["b"]
    loss = jnp.mean(jnp.logaddexp(0.0, logits) - batch["y"] * logits) + 1e-3 * jnp.sqrt(jnp.sum(params["b"] ** 2))
    return loss, {"loss": loss}  # sqrt at b = 0: a finite loss with a NaN gradient


def _state(opt, b=1.0):
    return TrainState.create({"w": jnp.zeros((D,)), "b": jnp.asarray(b)}, opt, 0)


def _poisoned(batch):
    return {**batch, "x": np.full_like(batch["x"], np.nan)}


def test_a_non_finite_step_changes_nothing_but_the_counters():
    opt = make_optimizer("adam", 0.1)
    step = make_train_step(_loss, opt, max_bad_steps=3)
    good = epoch_batches(_data(), B, 0)[0]
    state, _ = step(_state(opt), good)
    before = jax.tree.map(np.asarray, state)
    for bad, why in ((_poisoned(good), "loss"), (good, "gradient")):
        if why == "gradient":  # b = 0 exactly: the loss is finite, d sqrt(b^2)/db is not
            state = state.replace(params={**state.params, "b": jnp.zeros(())})
            before = jax.tree.map(np.asarray, state)
        state, metrics = step(state, bad)
        for a, b in zip(jax.tree.leaves(before.params) + jax.tree.leaves(before.opt_state),
                        jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state)):
            np.testing.assert_array_equal(a, b)
        assert int(state.step) == int(before.step) + 1, why  # the step (data order, keys) moves on
    assert int(state.skipped) == 2 and int(state.bad_streak) == 2
    state = state.replace(params={**state.params, "b": jnp.ones(())})
    state, _ = step(state, good)
    assert int(state.skipped) == 2 and int(state.bad_streak) == 0  # a good step ends the streak
    assert np.all(np.isfinite(np.asarray(state.params["w"]))) and not np.allclose(state.params["w"], before.params["w"])


def _fit(workdir, epochs, poison_from_epoch=None, poison_batch=None, max_bad_steps=3):
    data = _data()
    cfg = TrainConfig(epochs=epochs, batch_size=B, lr=0.1, workdir=str(workdir), max_bad_steps=max_bad_steps, log_every=1)
    opt = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay)

    source = epoch_batches(data, B, cfg.seed)

    def batches(epoch, skip):
        for i in range(skip, N // B):
            batch = source[epoch * (N // B) + i]
            poison = (poison_from_epoch is not None and epoch >= poison_from_epoch) or (epoch, i) == poison_batch
            yield _poisoned(batch) if poison else batch

    return fit(_state(opt), make_train_step(_loss, opt), batches, N // B,
               lambda p: {"loss": float(_loss(p, data, None)[0])}, cfg)


def test_a_poisoned_batch_is_skipped_counted_and_training_goes_on(tmp_path):
    result = _fit(tmp_path, 2, poison_batch=(0, 2))
    assert result.steps == 2 * N // B and int(result.state.skipped) == 1
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(result.state.params))
    train = [e for e in read_events(str(tmp_path / "metrics.jsonl")) if e["split"] == "train"]
    assert [e.get("skipped_steps") for e in train] == [1, 1]  # the run's total so far, in each epoch's line
    assert np.isnan(train[0]["loss"]) and np.isfinite(train[1]["loss"])


def test_k_bad_steps_in_a_row_stop_the_run_and_leave_the_checkpoint_intact(tmp_path):
    first = _fit(tmp_path, 1)  # one clean epoch, checkpointed at step 4
    with pytest.raises(Diverged, match="not finite for 3 steps in a row"):
        _fit(tmp_path, 3, poison_from_epoch=1)
    ckpt = Checkpoints(str(tmp_path / "checkpoints"))
    assert ckpt.manager.all_steps() == [N // B]
    restored, _ = ckpt.restore_or(_state(make_optimizer("adam", 0.1, TrainConfig.weight_decay)))
    for a, b in zip(jax.tree.leaves(first.state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_diverged_run_exits_with_status_3_and_one_line(tmp_path, capsys):
    def main(argv):
        _fit(tmp_path, 1, poison_from_epoch=0, max_bad_steps=2)

    with pytest.raises(SystemExit) as e:
        cli.run(main)
    assert e.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: the loss or gradients were not finite for 2 steps in a row")
