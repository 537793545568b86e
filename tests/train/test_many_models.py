"""Many models in one vmapped step: the same as separate steps, per-model hyperparameters as data."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.train import TrainState, make_optimizer, make_train_step
from jaxdl.train.state import stack_states, unstack_state


def _loss(params, batch, rng):
    pred = jnp.tanh(batch["x"] @ params["w1"]) @ params["w2"]
    loss = jnp.mean((pred - batch["y"]) ** 2) + 1e-3 * jax.random.normal(rng, ())
    return loss, {"loss": loss}


def _setup(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w1": jax.random.normal(k1, (3, 8)), "w2": jax.random.normal(k2, (8, 1))}
    rng = np.random.default_rng(seed)
    batch = {"x": rng.normal(size=(16, 3)).astype(np.float32), "y": rng.normal(size=(16, 1)).astype(np.float32)}
    return params, batch


def test_vmapped_step_equals_separate_steps_with_per_model_learning_rates():
    lrs, wds = [1e-3, 3e-2, 1e-1], [0.0, 1e-2, 1e-1]
    singles, stacked_states, batches = [], [], []
    for i, (lr, wd) in enumerate(zip(lrs, wds)):
        params, batch = _setup(i)
        opt = make_optimizer("adam", lr, wd, hyperparams_as_data=True)
        stacked_states.append(TrainState.create(params, opt, seed=i))
        state = TrainState.create(jax.tree.map(jnp.copy, params), opt, seed=i)  # own buffers: steps donate
        step = make_train_step(_loss, opt)
        for _ in range(3):
            state, _ = step(state, batch)
        singles.append(state)
        batches.append(batch)
    # one optimizer object for all: each model's learning rate and weight decay live in its state
    many_step = make_train_step(_loss, make_optimizer("adam", 1.0, 0.5, hyperparams_as_data=True), many=True)
    state = stack_states(stacked_states)
    batch = jax.tree.map(lambda *b: np.stack(b), *batches)
    for _ in range(3):
        state, metrics = many_step(state, batch)
    assert metrics["loss"].shape == (3,)
    for i, single in enumerate(singles):
        for a, b in zip(jax.tree.leaves(unstack_state(state, i).params), jax.tree.leaves(single.params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = [float(jnp.abs(s.params["w1"] - _setup(i)[0]["w1"]).max()) for i, s in enumerate(singles)]
    assert moved[0] < moved[1] < moved[2]  # the learning rates really differed
