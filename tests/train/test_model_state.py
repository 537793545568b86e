"""Running statistics (batch norm) in the engine's step: kept in the state, updated by the model and
never by the optimizer, left alone by a skipped step, per model in a vmapped step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.mlp import MLP
from jaxdl.tasks.vector import VectorTask
from jaxdl.train import TrainState, make_optimizer, make_train_step
from jaxdl.train.state import num_params, split_model_state, stack_states, unstack_state

TASK = VectorTask(MLP((8, 8), 3, "relu", "batch"), "softmax_ce")


def _batch(seed, n=16):
    rng = np.random.default_rng(seed)
    return {"x": jnp.asarray(rng.standard_normal((n, 5)) * 2 + 1, jnp.float32), "y": jnp.asarray(rng.integers(0, 3, n))}


def _state(seed=0, opt=None):
    opt = opt or make_optimizer("adamw", 1e-2, 0.5)  # strong decoupled decay: it must not reach the statistics
    return TrainState.create(TASK.init(jax.random.key(seed), _batch(0)), opt, seed), opt


def test_the_statistics_are_the_models_update_and_the_optimizer_trains_the_rest():
    state, opt = _state()
    trained, stats = split_model_state(state.params)
    assert set(stats) == {"batch_stats"} and "batch_stats" not in jax.tree_util.keystr(
        jax.tree_util.tree_leaves_with_path(state.opt_state))
    assert num_params(state.params) == num_params(trained) == 5 * 8 + 2 * 8 + 8 * 8 + 2 * 8 + 8 * 3 + 3  # no biases before a norm
    batch = _batch(1)
    _, expected = TASK.model.apply(state.params, batch["x"], train=True, mutable=["batch_stats"])
    old = jax.tree.map(np.asarray, state.params)
    new, metrics = make_train_step(TASK.loss, opt)(state, batch)
    assert "model_state" not in metrics
    for a, b in zip(jax.tree.leaves(expected["batch_stats"]), jax.tree.leaves(new.params["batch_stats"])):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # decay would move them by ~lr * 0.5 = 5e-3
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(old["params"]), jax.tree.leaves(new.params["params"]))]
    assert all(moved)  # every trained array took a step


def test_a_skipped_step_keeps_the_old_statistics():
    state, opt = _state()
    old = jax.tree.map(np.asarray, state.params["batch_stats"])
    bad = _batch(1)
    bad["x"] = bad["x"].at[0, 0].set(jnp.nan)
    new, _ = make_train_step(TASK.loss, opt)(state, bad)
    assert int(new.skipped) == 1
    for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new.params["batch_stats"])):
        np.testing.assert_array_equal(a, b)


def test_a_vmapped_step_keeps_each_models_own_statistics():
    opt = make_optimizer("adam", 1e-2)
    states = [_state(seed, opt)[0] for seed in (0, 1)]
    batches = [_batch(10), _batch(11)]
    step = make_train_step(TASK.loss, opt)
    separate = [step(s, b)[0] for s, b in zip(states, batches)]
    states = [_state(seed, opt)[0] for seed in (0, 1)]  # the step above donated the first ones
    many, _ = make_train_step(TASK.loss, opt, many=True)(stack_states(states), jax.tree.map(
        lambda *x: jnp.stack(x), *batches))
    for i, one in enumerate(separate):
        for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(unstack_state(many, i).params)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_evaluation_uses_the_running_statistics():
    state, _ = _state()
    data = _batch(2, n=32)
    before = TASK.evaluate(state.params, data)["outputs"]
    shifted = jax.tree.map(lambda x: x, state.params)
    shifted["batch_stats"]["norm0"]["mean"] = shifted["batch_stats"]["norm0"]["mean"] + 1.0
    assert not np.allclose(before, TASK.evaluate(shifted, data)["outputs"])


def test_a_hand_written_gradient_is_refused_for_a_model_with_statistics():
    state, opt = _state()
    step = make_train_step(TASK.loss, opt, grad_fn=lambda p, b, k: (p, {}))
    with pytest.raises(ValueError, match="running statistics"):
        step(state, _batch(1))
