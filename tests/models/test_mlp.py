"""MLP: output shapes for any hidden widths (none included), layer names, activation checks, softmax.

Shape checks use jax.eval_shape, which traces without compiling anything.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.mlp import ACTIVATIONS, MLP, softmax


@pytest.mark.parametrize("hidden", [(), (7,), (16, 8), (5, 4, 3)])
def test_shapes_and_layer_names(hidden):
    model = MLP(hidden=hidden, out=3)
    x_BD = jax.ShapeDtypeStruct((6, 4), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(1), x_BD)
    widths = (4, *hidden, 3)
    assert list(params["params"]) == [f"dense{i}" for i in range(len(hidden) + 1)]
    for i in range(len(hidden) + 1):
        assert params["params"][f"dense{i}"]["kernel"].shape == (widths[i], widths[i + 1])
        assert params["params"][f"dense{i}"]["bias"].shape == (widths[i + 1],)
    assert jax.eval_shape(model.apply, params, x_BD).shape == (6, 3)


def test_list_of_widths_is_accepted():
    params = jax.eval_shape(MLP(hidden=[5, 2], out=1).init, jax.random.key(0), jnp.zeros((1, 3)))
    assert params["params"]["dense2"]["kernel"].shape == (2, 1)


def _random_params(model, x, seed=0):
    # numpy values in init's shapes: running init itself would compile its random-number ops
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def test_every_activation_runs():
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    models = {a: MLP(hidden=(4,), out=2, activation=a) for a in ACTIVATIONS}
    params = _random_params(models["relu"], x)  # the same layers whatever the activation
    logits = jax.jit(lambda p, x: {a: m.apply(p, x) for a, m in models.items()})(params, x)
    for a, out in logits.items():
        assert out.shape == (2, 2) and np.all(np.isfinite(out)), a
    assert not np.allclose(logits["relu"], logits["identity"])


def test_identity_mlp_is_affine():
    # without a hidden non-linearity the whole net is one affine map: f(x + y) - f(y) = f(x) - f(0)
    model = MLP(hidden=(8, 8), out=2, activation="identity")
    x, y = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    params = _random_params(model, x)

    @jax.jit
    def both_sides(x, y):
        f = lambda v: model.apply(params, v)
        return f(x + y) - f(y), f(x) - f(jnp.zeros_like(x))

    np.testing.assert_allclose(*both_sides(x, y), atol=1e-5)


def test_unknown_activation_raises_with_the_valid_names():
    with pytest.raises(ValueError, match="relu") as err:
        jax.eval_shape(MLP(hidden=(4,), out=2, activation="swish").init, jax.random.key(0), jnp.zeros((1, 3)))
    assert "swish" in str(err.value) and "sigmoid" in str(err.value)


def test_softmax_gives_probabilities():
    logits = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32) * 10
    p = np.asarray(jax.jit(softmax)(logits))
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(p.argmax(-1), logits.argmax(-1))
