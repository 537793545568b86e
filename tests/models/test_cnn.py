"""MyNet: exact parameter counts, output shapes, pooling choice, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.cnn import MyNet, pool_2x2


def _layer_counts(params):
    return {name: sum(x.size for x in jax.tree.leaves(layer)) for name, layer in params["params"].items()}


def test_parameter_counts_48x48_rgb_10_classes():
    model = MyNet()
    params = jax.eval_shape(model.init, jax.random.key(0), model.example_input())
    assert _layer_counts(params) == {"conv1": 896, "conv2": 18_496, "conv3": 73_856, "fc1": 9_437_696, "fc2": 5_130}
    assert sum(_layer_counts(params).values()) == 9_536_074
    assert params["params"]["fc1"]["kernel"].shape == (18_432, 512)


@pytest.mark.parametrize("size,channels,classes", [(48, 3, 10), (28, 3, 10), (28, 1, 10), (32, 3, 43)])
def test_output_shapes(size, channels, classes):
    model = MyNet(num_classes=classes, image_size=size, in_channels=channels)
    x = jax.random.normal(jax.random.key(1), (5, size, size, channels))
    params = model.init(jax.random.key(0), x)
    assert params["params"]["fc1"]["kernel"].shape == ((size // 4) ** 2 * 128, 512)
    logits = model.apply(params, x)
    assert logits.shape == (5, classes) and logits.dtype == jnp.float32


def test_dropout_only_in_training():
    model = MyNet(image_size=16)
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    params = model.init(jax.random.key(0), x)
    eval_a, eval_b = model.apply(params, x), model.apply(params, x)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = model.apply(params, x, train=True, rngs={"dropout": jax.random.key(2)})
    train_b = model.apply(params, x, train=True, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(train_a, train_b)


def test_pooling_max_and_avg():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    ref = np.asarray(x).reshape(2, 2, 2, 2, 2, 3)
    np.testing.assert_array_equal(pool_2x2(x, "max"), ref.max(axis=(2, 4)))
    np.testing.assert_allclose(pool_2x2(x, "avg"), ref.mean(axis=(2, 4)))
    a = MyNet(image_size=16, pool="max")
    b = MyNet(image_size=16, pool="avg")
    xs = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    p = a.init(jax.random.key(0), xs)
    assert not np.allclose(a.apply(p, xs), b.apply(p, xs))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of 4"):
        MyNet(image_size=30).init(jax.random.key(0), jnp.zeros((1, 30, 30, 3)))
    with pytest.raises(ValueError, match=r"\(B, 48, 48, 3\)"):
        MyNet().init(jax.random.key(0), jnp.zeros((1, 28, 28, 3)))


def test_usable_from_flax_nnx_through_the_bridge():
    from flax import nnx

    linen_model = MyNet(image_size=16)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    nnx_model = nnx.bridge.ToNNX(linen_model, rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(nnx_model, x)
    params = {"params": nnx.to_pure_dict(nnx.state(nnx_model, nnx.Param))}
    np.testing.assert_allclose(nnx_model(x), linen_model.apply(params, x), rtol=1e-6, atol=1e-6)


def test_max_pool_matches_flax_max_pool_values_and_gradients_with_ties():
    import flax.linen as nn

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 3, (2, 6, 8, 4)).astype(np.float32))  # many exact ties
    ref = lambda v: nn.max_pool(v, (2, 2), (2, 2))
    np.testing.assert_array_equal(pool_2x2(x, "max"), ref(x))
    w = jnp.asarray(rng.normal(size=(2, 3, 4, 4)).astype(np.float32))
    g_ours = jax.grad(lambda v: (pool_2x2(v, "max") * w).sum())(x)
    g_ref = jax.grad(lambda v: (ref(v) * w).sum())(x)
    np.testing.assert_array_equal(g_ours, g_ref)
    assert float((g_ours != 0).sum()) == w.size  # each window's gradient lands on exactly one input
