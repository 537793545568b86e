"""The text-to-image task: training lowers the loss; sampling is deterministic per key, guidance 0 is the
conditional model, and both samplers run through the vmapped, jitted path."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.data import captions
from jaxdl.data.batches import cycled_batches, eval_batches
from jaxdl.data.images import load_digits
from jaxdl.models.unet import TextConditionedUNet
from jaxdl.tasks.diffusion import ddim_sample, linear_schedule
from jaxdl.tasks.text_to_image import SamplerConfig, TextToImage, to_unit_range
from jaxdl.train import TrainState, make_optimizer, make_train_step
from jaxdl.train.step import ema_extras

MAX_LEN = 40


@functools.lru_cache(maxsize=None)
def _setup():
    data = load_digits()
    tokens, lengths = captions.caption_table(data.class_names, MAX_LEN)
    model = TextConditionedUNet(unet=dict(out_channels=1, channels=16, levels=1, blocks=1, num_heads=2),
                                text=dict(vocab_size=captions.VOCAB_SIZE, d_model=16, num_layers=1, num_heads=2,
                                          max_len=MAX_LEN))
    task = TextToImage(model, linear_schedule(50), tokens, lengths, uncond_prob=0.15, min_snr_gamma=5.0)
    train = {"image": data.train.images, "label": data.train.labels}
    test = {"image": data.test.images, "label": data.test.labels}
    params = task.init(jax.random.key(0), next(eval_batches(test, 1)))
    return data, task, train, test, params


@functools.lru_cache(maxsize=None)
def _trained():
    """150 Adam steps on digits; the initial and final held-out losses and the EMA params."""
    data, task, train, test, params = _setup()
    optimizer = make_optimizer("adam", 2e-3)
    state = TrainState.create(params, optimizer, 0, extras=ema_extras(params))
    step = make_train_step(task.loss, optimizer, ema_decay=0.9)
    before = task.evaluate(params, eval_batches(test, 360))["loss"]
    for batch in map(cycled_batches(train, 32, 0).__getitem__, range(150)):
        state, _ = step(state, batch)
    return before, task.evaluate(state.params, eval_batches(test, 360))["loss"], state


def test_training_lowers_the_held_out_denoising_loss():
    before, after, state = _trained()
    assert after < 0.6 * before, (before, after)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.extras["ema"]))


def _prompts(*texts):
    return captions.encode(list(texts), MAX_LEN)


def test_sampling_is_deterministic_per_key_and_in_range():
    _, task, _, _, _ = _setup()
    params = _trained()[2].extras["ema"]
    tokens, lengths = _prompts("a handwritten seven", "the digit 3")
    config = SamplerConfig("ddim", steps=5, eta=1.0, guidance=2.0)
    a = task.sample(params, tokens, lengths, jax.random.key(0), (8, 8, 1), 3, config)
    assert a.shape == (2, 3, 8, 8, 1) and float(a.min()) >= 0 and float(a.max()) <= 1
    np.testing.assert_array_equal(task.sample(params, tokens, lengths, jax.random.key(0), (8, 8, 1), 3, config), a)
    assert not np.allclose(task.sample(params, tokens, lengths, jax.random.key(1), (8, 8, 1), 3, config), a)


def test_guidance_zero_samples_from_the_conditional_model_alone():
    _, task, _, _, _ = _setup()
    params = _trained()[2].extras["ema"]
    tokens, lengths = _prompts("a handwritten seven", "8")
    key = jax.random.key(3)
    got = task.sample(params, tokens, lengths, key, (8, 8, 1), 2, SamplerConfig("ddim", steps=4, guidance=0.0))

    @jax.jit
    def by_hand(tokens_1S, lengths_1, key):  # prompt p's key, its x_T, the conditional eps only
        ctx = task.model.apply(params, tokens_1S, lengths_1, method="encode")
        eps_fn = lambda x, t: task.model.apply(params, x, t, jnp.repeat(ctx, 2, 0), jnp.repeat(lengths_1, 2),
                                               method="denoise")
        k_init, k_steps = jax.random.split(key)
        x_T = jax.random.normal(k_init, (2, 8, 8, 1))
        return to_unit_range(ddim_sample(eps_fn, task.schedule, x_T, k_steps, 4, 0.0, clip=1.0))

    for p, k in enumerate(jax.random.split(key, 2)):
        np.testing.assert_allclose(got[p], by_hand(tokens[p:p + 1], lengths[p:p + 1], k), atol=1e-5)


def test_guidance_changes_the_samples():
    _, task, _, _, _ = _setup()
    params = _trained()[2].extras["ema"]
    tokens, lengths = _prompts("a handwritten seven")
    draw = lambda w: task.sample(params, tokens, lengths, jax.random.key(3), (8, 8, 1), 2,
                                 SamplerConfig("ddim", steps=4, guidance=w))
    assert np.abs(draw(3.0) - draw(0.0)).max() > 1e-3


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_both_samplers_run_for_a_batch_of_prompts(sampler):
    _, task, _, _, _ = _setup()
    params = _trained()[2].extras["ema"]
    tokens, lengths = _prompts("one", "two", "three")
    out = task.sample(params, tokens, lengths, jax.random.key(0), (8, 8, 1), 2, SamplerConfig(sampler, steps=10))
    assert out.shape == (3, 2, 8, 8, 1) and np.isfinite(np.asarray(out)).all()
