"""The recall task: the step-by-step model equals the scanned one, the hidden-state gradient equals
finite differences and the gradient of the recurrence restarted at that state (float64), the
evaluation of stacked models equals their losses, and an LSTM learns a short lag in seconds."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data import delayed_recall as dr
from jaxdl.models.recurrence import cell_step, hidden_of
from jaxdl.models.recurrent import SequenceClassifier
from jaxdl.tasks import long_range as lr
from jaxdl.train import TrainState, make_train_step
from jaxdl.train.state import stack_states

SYMBOLS, LENGTH, LAG = 4, 9, 6


def _task(cell, hidden=5, forget_bias=1.0):
    return lr.RecallTask(SequenceClassifier(SYMBOLS, dr.vocab_size(SYMBOLS, 2), cell, 3, hidden), 1.0, forget_bias)


def _batch(n=3, lag=LAG, seed=0):
    return dr.test_set(n, lag, LENGTH, SYMBOLS, 2, seed)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_step_by_step_model_is_the_scanned_model(cell):
    task, batch = _task(cell), _batch()
    params = task.init(jax.random.key(0), batch)
    expected = task.model.apply(params, batch["tokens"])
    eps = jnp.zeros((LENGTH, 3, 5))
    np.testing.assert_allclose(lr.unrolled_logits(cell, params, batch["tokens"], eps), expected, atol=1e-5)


def test_init_sets_the_embedding_scale_and_only_the_lstm_forget_bias():
    batch = _batch(1)
    plain = SequenceClassifier(SYMBOLS, dr.vocab_size(SYMBOLS, 2), "lstm", 3, 5).init(
        jax.random.split(jax.random.key(0))[0], batch["tokens"])["params"]["Recurrent_0"]["layer0"]["b_ih"]
    lstm = _task("lstm", forget_bias=2.0).init(jax.random.key(0), batch)["params"]
    np.testing.assert_allclose(lstm["Recurrent_0"]["layer0"]["b_ih"] - plain, np.repeat([0, 2.0, 0, 0], 5), atol=1e-6)
    big = _task("gru", hidden=5).init(jax.random.key(0), dr.test_set(1, 1, 2, SYMBOLS, 2000, 0))
    assert 0.9 < float(jnp.std(big["params"]["Embed_0"]["embedding"])) < 1.1


def _restarted_loss(cell, params, tokens_BT, label_B, t, h_BH, c_BH):
    """The loss of the plain recurrence restarted after step t from hidden state h (cell state c)."""
    layer, table, dense = lr._layer(params)
    carry = (h_BH, c_BH) if cell == "lstm" else h_BH
    for s in range(t + 1, tokens_BT.shape[1]):
        x_BE = table[tokens_BT[:, s]]
        carry, _ = cell_step(cell, x_BE @ layer["w_ih"] + layer["b_ih"], hidden_of(carry) @ layer["w_hh"] + layer["b_hh"],
                             carry)
    logits_BK = hidden_of(carry) @ dense["kernel"] + dense["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits_BK, label_B).sum()


def _states(cell, params, tokens_BT, t):
    """(h, c) after step t, by the plain recurrence."""
    layer, table, _ = lr._layer(params)
    B, H = tokens_BT.shape[0], layer["w_hh"].shape[0]
    carry = (jnp.zeros((B, H)), jnp.zeros((B, H))) if cell == "lstm" else jnp.zeros((B, H))
    for s in range(t + 1):
        carry, _ = cell_step(cell, table[tokens_BT[:, s]] @ layer["w_ih"] + layer["b_ih"],
                             hidden_of(carry) @ layer["w_hh"] + layer["b_hh"], carry)
    return (carry[0], carry[1]) if cell == "lstm" else (carry, None)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_hidden_gradient_equals_finite_differences_and_the_restarted_recurrence(cell):
    with jax.enable_x64(True):
        task, batch = _task(cell), _batch()
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), task.init(jax.random.key(1), batch))
        tokens, label = jnp.asarray(batch["tokens"]), jnp.asarray(batch["label"])
        grads_TBH = lr.hidden_gradients(cell, params, tokens, label, jnp.float64)
        assert grads_TBH.dtype == jnp.float64 and grads_TBH.shape == (LENGTH, 3, 5)
        v_TBH = jax.random.normal(jax.random.key(2), grads_TBH.shape, jnp.float64)
        loss = jax.jit(lambda eps: lr.unrolled_loss(cell, params, tokens, label, eps))
        restarted_grad = jax.jit(jax.grad(_restarted_loss, argnums=5), static_argnums=(0, 4))
        for t in (0, LENGTH - 1 - LAG, LENGTH - 1):
            # finite differences along a random direction of step t's hidden state
            e = jnp.zeros_like(v_TBH).at[t].set(v_TBH[t])
            delta = 1e-5
            fd = (loss(delta * e) - loss(-delta * e)) / (2 * delta)
            np.testing.assert_allclose(fd, jnp.vdot(grads_TBH[t], v_TBH[t]), rtol=1e-6, atol=1e-10)
            # jax.grad of the plain recurrence started from that hidden state
            h, c = _states(cell, params, tokens, t)
            direct = restarted_grad(cell, params, tokens, label, t, h, c)
            np.testing.assert_allclose(grads_TBH[t], direct, rtol=1e-10, atol=1e-14)


def test_gradient_norms_are_ordered_k_steps_back():
    task, batch = _task("rnn"), _batch()
    params = task.init(jax.random.key(0), batch)
    norms = lr.hidden_gradient_norms("rnn", params, batch)
    grads = lr.hidden_gradients("rnn", params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["label"]))
    assert norms.shape == (LENGTH,)
    np.testing.assert_allclose(norms[0], np.linalg.norm(np.asarray(grads[-1]), axis=-1).mean(), rtol=1e-5)
    np.testing.assert_allclose(norms[-1], np.linalg.norm(np.asarray(grads[0]), axis=-1).mean(), rtol=1e-5)


def test_evaluating_stacked_models_gives_each_its_own_loss_and_accuracy(monkeypatch):
    monkeypatch.setattr(lr, "EVAL_CHUNK", 4)  # several chunks, the last one short
    task = _task("gru")
    tests = [_batch(10, lag, seed) for lag, seed in ((2, 0), (6, 1))]
    params = [task.init(jax.random.key(i), tests[0]) for i in range(2)]
    got = task.evaluate(stack_states(params), {k: np.stack([t[k] for t in tests]) for k in ("tokens", "label")})
    for i in range(2):
        _, m = task.loss(params[i], tests[i], None)
        np.testing.assert_allclose(got["loss"][i], m["loss"], rtol=1e-5)
        np.testing.assert_allclose(got["accuracy"][i], m["accuracy"], rtol=1e-6)


def test_an_lstm_learns_a_short_lag():
    lag, length = 3, 5
    task = lr.RecallTask(SequenceClassifier(SYMBOLS, dr.vocab_size(SYMBOLS, 0), "lstm", 8, 16), 1.0, 1.0)
    optimizer = optax.adam(1e-2)
    example = dr.test_set(1, lag, length, SYMBOLS, 0, 0)
    state = TrainState.create(task.init(jax.random.key(0), example), optimizer, 0)
    step = make_train_step(task.loss, optimizer)
    batches = dr.train_batches(64, lag, length, SYMBOLS, 0, 0)
    for s in range(150):
        state, _ = step(state, batches[s])
    test = dr.test_set(256, lag, length, SYMBOLS, 0, 0)
    _, metrics = task.loss(state.params, test, None)
    assert float(metrics["accuracy"]) >= 0.95
