"""The text-conditioned U-Net: shapes for every supported size, errors, and what its output depends on."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.unet import TextConditionedUNet, UNet, check_image_size, example_inputs

TEXT = dict(vocab_size=20, d_model=16, num_layers=1, num_heads=2, max_len=6)


def _model(levels=2, channels=1):
    return TextConditionedUNet(unet=dict(out_channels=channels, channels=8, levels=levels, blocks=1, num_heads=2),
                               text=TEXT)


@pytest.mark.parametrize("size,levels,channels", [(8, 1, 1), (8, 2, 1), (8, 3, 3), (12, 3, 1), (16, 3, 3),
                                                  (28, 2, 1), (28, 3, 3), (32, 4, 3)])
def test_output_shape_equals_input_shape(size, levels, channels):
    model = _model(levels, channels)
    inputs = example_inputs(size, channels, TEXT["max_len"], batch=3)
    params = jax.eval_shape(model.init, jax.random.key(0), *inputs)
    out = jax.eval_shape(model.apply, params, *inputs)
    assert out.shape == (3, size, size, channels)


@pytest.mark.parametrize("size,levels", [(8, 4), (6, 3), (2, 2), (10, 3), (7, 2)])
def test_sizes_the_unet_cannot_halve_enough_are_refused(size, levels):
    with pytest.raises(ValueError, match="halves the image"):
        check_image_size(size, levels)
    model = UNet(channels=8, levels=levels)
    with pytest.raises(ValueError, match="halves the image"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 1)), jnp.zeros((1,), jnp.int32),
                       jnp.zeros((1, 4, 8)), jnp.ones((1,), jnp.int32))


@functools.lru_cache(maxsize=None)
def _trained_looking():
    """Params with the zero-initialised output convolutions randomised, so the output depends on everything."""
    model = _model()
    params = model.init(jax.random.key(0), *example_inputs(8, 1, TEXT["max_len"]))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [jnp.where(x == 0, 0.1 * jax.random.normal(k, x.shape), x) for x, k in zip(leaves, keys)]
    return model, jax.tree.unflatten(tree, leaves)


def test_untrained_unet_predicts_zero_noise():
    model = _model()
    inputs = example_inputs(8, 1, TEXT["max_len"], batch=2)
    params = model.init(jax.random.key(0), *inputs)
    x = jax.random.normal(jax.random.key(2), inputs[0].shape)
    np.testing.assert_array_equal(model.apply(params, x, *inputs[1:]), 0.0)


def test_output_depends_on_the_prompt_and_time_but_not_on_padding():
    model, params = _trained_looking()
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 1))
    t = jnp.array([10, 500])
    a = jnp.array([[1, 5, 6, 0, 0, 0], [1, 7, 0, 0, 0, 0]])
    lengths = jnp.array([3, 2])
    apply = jax.jit(model.apply)
    out = apply(params, x, t, a, lengths)
    padded_differently = a.at[:, 4:].set(9)  # beyond each prompt's length
    np.testing.assert_allclose(apply(params, x, t, padded_differently, lengths), out, atol=1e-6)
    other_prompt = a.at[:, 1].set(3)
    assert np.abs(apply(params, x, t, other_prompt, lengths) - out).max() > 1e-3
    assert np.abs(apply(params, x, t[::-1], a, lengths) - out).max() > 1e-3
    # each image depends on its own prompt only
    out_first = apply(params, x[:1], t[:1], a[:1], lengths[:1])
    np.testing.assert_allclose(out_first, out[:1], atol=1e-5)
