"""The engine's moving average of the params (state.extras["ema"]), checked against the recurrence by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.train import TrainState, make_optimizer, make_train_step
from jaxdl.train.step import ema_decay_at, ema_extras


def _loss(params, batch, rng):
    loss = jnp.sum((params["w"] * batch["x"] - batch["y"]) ** 2)
    return loss, {"loss": loss}


def test_ema_follows_its_recurrence_with_warmup_and_leaves_the_params_alone():
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    optimizer = make_optimizer("sgd", 0.05, momentum=0.0)
    batches = [{"x": jnp.array([1.0, 2.0, 3.0]) * (i + 1), "y": jnp.ones(3)} for i in range(6)]
    copy = lambda: jax.tree.map(jnp.copy, params)  # each state's buffers are donated to its steps
    plain = TrainState.create(copy(), optimizer, 0)
    state = TrainState.create(copy(), optimizer, 0, extras=ema_extras(params))
    step_plain, step_ema = make_train_step(_loss, optimizer), make_train_step(_loss, optimizer, ema_decay=0.8)
    ema = np.asarray(params["w"], np.float64)
    for i, batch in enumerate(batches):
        plain, _ = step_plain(plain, batch)
        state, _ = step_ema(state, batch)
        decay = min(0.8, (1 + i) / (10 + i))
        ema = decay * ema + (1 - decay) * np.asarray(plain.params["w"], np.float64)
        np.testing.assert_allclose(state.params["w"], plain.params["w"], rtol=1e-6)  # the EMA changes no step
        np.testing.assert_allclose(state.extras["ema"]["w"], ema, rtol=1e-5)
    assert float(ema_decay_at(jnp.int32(10_000), 0.999)) == np.float32(0.999)


def test_ema_extras_are_a_copy():
    params = {"w": jnp.ones(3)}
    extras = ema_extras(params)
    assert extras["ema"]["w"] is not params["w"]
    leaves = jax.tree.leaves(extras)
    assert len(leaves) == 1 and np.array_equal(leaves[0], params["w"])
