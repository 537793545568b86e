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
def _model_and_params():
    """A model, its initial params, and the params with the zero-initialised output convolutions
    randomised (so the output depends on everything), with a jitted apply for inputs of batch 2.
    One level (self- and cross-attention in the middle block): XLA:CPU compiles two levels ~2x slower."""
    model = _model(levels=1)
    params = jax.jit(model.init)(jax.random.key(0), *example_inputs(8, 1, TEXT["max_len"], batch=2))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    randomised = [jnp.where(x == 0, 0.1 * jax.random.normal(k, x.shape), x) for x, k in zip(leaves, keys)]
    return model, params, jax.tree.unflatten(tree, randomised), jax.jit(model.apply)


X = jax.random.normal(jax.random.key(2), (2, 8, 8, 1))
T = jnp.array([10, 500])
PROMPTS = jnp.array([[1, 5, 6, 0, 0, 0], [1, 7, 0, 0, 0, 0]])
LENGTHS = jnp.array([3, 2])


def test_untrained_unet_predicts_zero_noise():
    _, params, _, apply = _model_and_params()
    np.testing.assert_array_equal(apply(params, X, T, PROMPTS, LENGTHS), 0.0)


def test_output_depends_on_the_prompt_and_time_but_not_on_padding():
    _, _, params, apply = _model_and_params()
    out = apply(params, X, T, PROMPTS, LENGTHS)
    assert np.abs(out).max() > 1e-3
    padded_differently = PROMPTS.at[:, 4:].set(9)  # beyond each prompt's length
    np.testing.assert_allclose(apply(params, X, T, padded_differently, LENGTHS), out, atol=1e-6)
    first_prompt_changed = apply(params, X, T, PROMPTS.at[0, 1].set(3), LENGTHS)
    assert np.abs(first_prompt_changed[0] - out[0]).max() > 1e-3
    np.testing.assert_allclose(first_prompt_changed[1], out[1], atol=1e-6)  # each image sees its own prompt only
    assert np.abs(apply(params, X, T[::-1], PROMPTS, LENGTHS) - out).max() > 1e-3
