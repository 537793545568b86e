"""Hand-written backpropagation against jax.grad, finite differences and optax, in float64.

Data and params come from numpy and every comparison runs inside one jax.jit per case: run eagerly,
each of the many small ops would compile on its own for every new shape, which is far slower.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxdl.models.backprop import ACTIVATION_DERIVATIVES, LOSSES, backward, forward, loss_and_grad
from jaxdl.models.mlp import ACTIVATIONS, MLP

OPTAX_LOSSES = {
    "mse": lambda logits, y: optax.squared_error(logits, y).mean(),
    "bce": lambda logits, y: optax.sigmoid_binary_cross_entropy(logits, y).mean(),
    "softmax_ce": lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
}


@pytest.fixture
def x64():
    # float64 makes 1e-10 agreement meaningful; restore the flag so other tests still run as before
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _targets(rng, loss, B, O):
    if loss == "mse":
        return rng.normal(size=(B, O))
    if loss == "bce":
        return rng.integers(0, 2, size=(B, O)).astype(np.float64)
    return rng.integers(0, O, size=B)


def _problem(seed, loss, hidden=None, shape=None):
    """Random widths, float64 params (Flax's layout, numpy values), inputs and targets for one case."""
    rng = np.random.default_rng(seed)
    B, D, O = shape or (int(rng.integers(1, 9)), int(rng.integers(1, 7)), int(rng.integers(2, 6)))
    if hidden is None:
        hidden = tuple(int(w) for w in rng.integers(1, 9, size=rng.integers(1, 4)))
    widths = (D, *hidden, O)
    # weights larger than Flax's default init, so every activation also works away from its linear part
    params = {"params": {f"dense{l}": {"kernel": rng.normal(size=widths[l : l + 2]) * 1.5 / np.sqrt(widths[l]),
                                       "bias": rng.normal(size=widths[l + 1]) * 0.5}
                         for l in range(len(widths) - 1)}}
    return params, rng.normal(size=(B, D)), _targets(rng, loss, B, O)


def _mlp_of(params, activation):
    """The MLP whose init gives params of these shapes (static at trace time)."""
    widths = [layer["bias"].shape[0] for layer in params["params"].values()]
    return MLP(tuple(widths[:-1]), widths[-1], activation)


def _reference_loss(params, x, y, activation, loss):
    logits = _mlp_of(params, activation).apply(params, x)
    return OPTAX_LOSSES[loss](logits, y), logits


def _assert_rel_close(got, want, tol):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype == np.float64, jax.tree_util.keystr(path)
        err = np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-300)
        assert err < tol, (jax.tree_util.keystr(path), err)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_manual_grads_equal_jax_grad(x64, loss):
    # Every activation gets its own random problem, and all of them are checked in one jax.jit:
    # XLA's compile time grows with the program, but one program per case also pays a fixed cost each.
    # Hidden depth cycles with the loss, so each activation is seen with 1, 2 and 3 hidden layers.
    activations = sorted(ACTIVATIONS)
    depth = {a: 1 + (i + sorted(LOSSES).index(loss)) % 3 for i, a in enumerate(activations)}
    problems = {a: _problem(SEED + 100 * i + sorted(LOSSES).index(loss), loss, depth=depth[a])
                for i, a in enumerate(activations)}

    @jax.jit
    def manual_and_reference(problems):
        results = {}
        for a, (params, x, y) in problems.items():
            (ref_value, ref_logits), ref_grads = jax.value_and_grad(_reference_loss, has_aux=True)(params, x, y, a, loss)
            results[a] = loss_and_grad(params, x, y, loss, a), (ref_value, ref_logits, ref_grads)
        return results

    for a, (manual, reference) in manual_and_reference(problems).items():
        assert len(manual[2]["params"]) == depth[a] + 1
        np.testing.assert_allclose(manual[0], reference[0], rtol=1e-12, err_msg=a)  # loss value
        np.testing.assert_allclose(manual[1], reference[1], rtol=1e-12, atol=1e-12, err_msg=a)  # logits
        _assert_rel_close(manual[2], reference[2], 1e-10, a)


def test_linear_model_has_one_layer(x64):
    params, x, y = _problem(SEED, "mse", hidden=())
    _, _, grads = loss_and_grad(params, x, y, "mse", "relu")
    ref_grads = jax.grad(lambda p: _reference_loss(p, x, y, "relu", "mse")[0])(params)
    assert list(grads["params"]) == ["dense0"]
    _assert_rel_close(grads, ref_grads, 1e-10)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_manual_grads_equal_finite_differences(x64, loss):
    _, _, params, x, y = _problem(7, loss, hidden=(4, 3), shape=(5, 3, 2))
    flat, unravel = ravel_pytree(params)
    eps = 1e-6

    @jax.jit
    def manual_and_fd(flat):
        f = jax.vmap(lambda v: LOSSES[loss][0](forward(unravel(v), x, "tanh")[0], y))
        basis = jnp.eye(flat.size, dtype=flat.dtype) * eps
        fd = (f(flat + basis) - f(flat - basis)) / (2 * eps)
        return ravel_pytree(loss_and_grad(unravel(flat), x, y, loss, "tanh")[2])[0], fd

    manual, fd = map(np.asarray, manual_and_fd(flat))
    assert np.linalg.norm(manual - fd) / np.linalg.norm(fd) < 1e-6


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_derivatives_equal_jax_grad(x64, activation):
    z = np.concatenate([np.linspace(-6.0, 6.0, 241), np.random.default_rng(0).normal(size=100) * 3])
    if activation == "relu":
        z = z[z != 0]  # the kink, where any subgradient is right
    both = jax.jit(lambda z: (ACTIVATION_DERIVATIVES[activation](z), jax.vmap(jax.grad(ACTIVATIONS[activation]))(z)))
    manual, want = both(z)
    np.testing.assert_allclose(manual, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_losses_and_their_derivatives_equal_optax(x64, loss):
    value, dvalue = LOSSES[loss]

    @jax.jit
    def manual_and_optax(logits, y):
        return (value(logits, y), dvalue(logits, y)), jax.value_and_grad(OPTAX_LOSSES[loss])(logits, y)

    rng = np.random.default_rng(1)
    for B, O in [(1, 2), (7, 3), (16, 10)]:
        logits, y = rng.normal(size=(B, O)) * 4, _targets(rng, loss, B, O)
        (v, dv), (want_v, want_dv) = manual_and_optax(logits, y)
        np.testing.assert_allclose(v, want_v, rtol=1e-13)
        np.testing.assert_allclose(dv, want_dv, rtol=1e-12, atol=1e-15)


def test_unknown_loss_raises(x64):
    _, _, params, x, y = _problem(0, "mse")
    with pytest.raises(ValueError, match="softmax_ce"):
        loss_and_grad(params, x, y, "hinge", "relu")


def test_adam_steps_with_manual_grads_match_jax_grad(x64):
    hidden, out, params, x, y = _problem(3, "softmax_ce", hidden=(8, 6), shape=(10, 4, 3))
    optimizer = optax.adam(1e-2)
    grad_fns = {
        "manual": lambda p: loss_and_grad(p, x, y, "softmax_ce", "gelu")[2],
        "jax": jax.grad(lambda p: _reference_loss(p, x, y, hidden, out, "gelu", "softmax_ce")),
    }

    @functools.partial(jax.jit, static_argnames="how")
    def five_steps(params, how):
        state = optimizer.init(params)
        for _ in range(5):
            updates, state = optimizer.update(grad_fns[how](params), state, params)
            params = optax.apply_updates(params, updates)
        return params

    by_hand, by_jax = five_steps(params, "manual"), five_steps(params, "jax")
    _assert_rel_close(by_hand, by_jax, 1e-10)
    assert not np.allclose(ravel_pytree(by_hand)[0], ravel_pytree(params)[0])  # the steps did move them
