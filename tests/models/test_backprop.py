"""Hand-written backpropagation against jax.grad, finite differences and optax, in float64.

XLA's compile time is what these tests spend, far more than running them. So data and params come
from numpy, each test compiles one program (run eagerly, every small op would compile on its own
for each new shape), and on CPU those programs compile with XLA's cheapest settings.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxdl.models.backprop import ACTIVATION_DERIVATIVES, LOSSES, loss_and_grad
from jaxdl.models.mlp import ACTIVATIONS, MLP

SEED = 0  # change it to draw other random shapes and values
OPTAX_LOSSES = {
    "mse": lambda logits, y: optax.squared_error(logits, y).mean(),
    "bce": lambda logits, y: optax.sigmoid_binary_cross_entropy(logits, y).mean(),
    "softmax_ce": lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
}


@functools.cache
def _fast_compile_options():
    # -O0 and the older (non-MLIR) fusion emitters compile these tiny programs about 4x faster on
    # XLA:CPU. Both sides of every comparison compile with the same settings, and float64 keeps
    # them within 1e-10 either way. An XLA without these options rejects them: then use defaults.
    options = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda v: v + 1, compiler_options=options)(1.0)
    except jax.errors.JaxRuntimeError:
        return None
    return options


def jit(fn):
    return jax.jit(fn, compiler_options=_fast_compile_options())


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


def _problem(seed, loss, depth=None, hidden=None, shape=None):
    """Random widths (`depth` hidden layers), float64 params in Flax's layout, inputs and targets."""
    rng = np.random.default_rng(seed)
    B, D, O = shape or (int(rng.integers(1, 9)), int(rng.integers(1, 7)), int(rng.integers(2, 6)))
    if hidden is None:
        hidden = tuple(int(w) for w in rng.integers(1, 9, size=depth or rng.integers(1, 4)))
    widths = (D, *hidden, O)
    # weights larger than Flax's default init, so every activation also works away from its linear part
    params = {"params": {f"dense{l}": {"kernel": rng.normal(size=widths[l : l + 2]) * 1.5 / np.sqrt(widths[l]),
                                       "bias": rng.normal(size=widths[l + 1]) * 0.5}
                         for l in range(len(widths) - 1)}}
    return params, rng.normal(size=(B, D)), _targets(rng, loss, B, O)


def _reference_loss(params, x, y, activation, loss):
    """optax's loss of Flax's MLP (widths read off the params' shapes), and the logits."""
    widths = [layer["bias"].shape[0] for layer in params["params"].values()]
    logits = MLP(tuple(widths[:-1]), widths[-1], activation).apply(params, x)
    return OPTAX_LOSSES[loss](logits, y), logits


def _assert_rel_close(got, want, tol, what=""):
    assert jax.tree.structure(got) == jax.tree.structure(want), what
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        where = f"{what} {jax.tree_util.keystr(path)}"
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype == np.float64, where
        err = np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-300)
        assert err < tol, (where, err)


@pytest.mark.parametrize("draw", range(2))
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_manual_grads_equal_jax_grad(x64, loss, draw):
    # Each activation gets its own random problem (36 random shapes over the losses and draws), all
    # checked in one program. Depth cycles so each activation meets 1, 2 and 3 hidden layers.
    k = sorted(LOSSES).index(loss)
    depth = {a: 1 + (i + k + draw) % 3 for i, a in enumerate(sorted(ACTIVATIONS))}
    problems = {a: _problem(SEED + 100 * draw + 10 * i + k, loss, depth=depth[a])
                for i, a in enumerate(sorted(ACTIVATIONS))}

    @jit
    def manual_and_reference(problems):
        results = {}
        for a, (params, x, y) in problems.items():
            (value, logits), grads = jax.value_and_grad(_reference_loss, has_aux=True)(params, x, y, a, loss)
            results[a] = loss_and_grad(params, x, y, loss, a), (value, logits, grads)
        return results

    for a, (manual, reference) in manual_and_reference(problems).items():
        assert len(manual[2]["params"]) == depth[a] + 1
        np.testing.assert_allclose(manual[0], reference[0], rtol=1e-12, err_msg=a)  # loss value
        np.testing.assert_allclose(manual[1], reference[1], rtol=1e-12, atol=1e-12, err_msg=a)  # logits
        _assert_rel_close(manual[2], reference[2], 1e-10, a)


def test_linear_model_grads(x64):
    params, x, y = _problem(SEED, "mse", hidden=())
    grads, ref_grads = jit(lambda p: (loss_and_grad(p, x, y, "mse", "relu")[2],
                                          jax.grad(lambda p: _reference_loss(p, x, y, "relu", "mse")[0])(p)))(params)
    assert list(grads["params"]) == ["dense0"]
    _assert_rel_close(grads, ref_grads, 1e-10)


def test_manual_grads_equal_finite_differences(x64):
    params, x, y = _problem(SEED, "softmax_ce", hidden=(4, 3), shape=(5, 3, 2))
    flat, unravel = ravel_pytree(params)
    eps = 1e-6

    @jit
    def manual_and_fd(flat):
        f = jax.vmap(lambda v: loss_and_grad(unravel(v), x, y, "softmax_ce", "tanh")[0])
        basis = jnp.eye(flat.size, dtype=flat.dtype) * eps  # one central difference per parameter
        fd = (f(flat + basis) - f(flat - basis)) / (2 * eps)
        return ravel_pytree(loss_and_grad(unravel(flat), x, y, "softmax_ce", "tanh")[2])[0], fd

    manual, fd = map(np.asarray, manual_and_fd(flat))
    assert np.linalg.norm(manual - fd) / np.linalg.norm(fd) < 1e-6


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_derivatives_equal_jax_grad(x64, activation):
    z = np.concatenate([np.linspace(-6.0, 6.0, 241), np.random.default_rng(SEED).normal(size=100) * 3])
    if activation == "relu":
        z = z[z != 0]  # the kink, where any subgradient is right
    both = jit(lambda z: (ACTIVATION_DERIVATIVES[activation](z), jax.vmap(jax.grad(ACTIVATIONS[activation]))(z)))
    manual, want = both(z)
    np.testing.assert_allclose(manual, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_losses_and_their_derivatives_equal_optax(x64, loss):
    value, dvalue = LOSSES[loss]
    rng = np.random.default_rng(SEED)
    cases = [(rng.normal(size=(B, O)) * 4, _targets(rng, loss, B, O)) for B, O in [(1, 2), (7, 3), (16, 10)]]

    @jit
    def manual_and_optax(cases):
        return [((value(z, y), dvalue(z, y)), jax.value_and_grad(OPTAX_LOSSES[loss])(z, y)) for z, y in cases]

    for (v, dv), (want_v, want_dv) in manual_and_optax(cases):
        np.testing.assert_allclose(v, want_v, rtol=1e-13)
        np.testing.assert_allclose(dv, want_dv, rtol=1e-12, atol=1e-15)


def test_unknown_loss_raises(x64):
    params, x, y = _problem(SEED, "mse")
    with pytest.raises(ValueError, match="softmax_ce"):
        loss_and_grad(params, x, y, "hinge", "relu")


def test_adam_steps_with_manual_grads_match_jax_grad(x64):
    params, x, y = _problem(SEED, "softmax_ce", hidden=(8, 6), shape=(10, 4, 3))
    optimizer = optax.adam(1e-2)
    grad_fns = {
        "manual": lambda p: loss_and_grad(p, x, y, "softmax_ce", "gelu")[2],
        "jax": jax.grad(lambda p: _reference_loss(p, x, y, "gelu", "softmax_ce")[0]),
    }

    @jit
    def step(ps, states):
        # both runs in one program, each with its own params and Adam state
        new = {}
        for how, p in ps.items():
            updates, new[how] = optimizer.update(grad_fns[how](p), states[how], p)
            ps = {**ps, how: optax.apply_updates(p, updates)}
        return ps, new

    ps = {how: params for how in grad_fns}
    states = {how: optimizer.init(params) for how in grad_fns}
    for _ in range(5):
        ps, states = step(ps, states)
    _assert_rel_close(ps["manual"], ps["jax"], 1e-10)
    assert not np.allclose(ravel_pytree(ps["manual"])[0], ravel_pytree(params)[0])  # the steps did move them
