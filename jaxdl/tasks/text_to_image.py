"""Text-to-image diffusion as a task: the training loss, a validation loss, and sampling from prompts.

Training (per example): a caption drawn from the image's class phrasings, replaced by the null
prompt with probability `uncond_prob` (so one network learns eps(x, c) and eps(x, null) for
classifier-free guidance), a timestep t ~ U{0..T-1}, noise, x_t = q_sample(x_0, t, noise); the loss
is the (optionally min-SNR weighted) MSE between predicted and true noise.

Sampling: for each prompt the text encoder runs once; DDPM or DDIM is one `lax.scan` over the steps
with the conditional and null predictions in one batch (guidance), and the whole thing is
`jax.vmap`ped over the prompts and jitted once per (prompts, samples, sampler, steps).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.captions import START
from jaxdl.tasks.diffusion import Schedule, ddim_sample, ddpm_sample, guided, loss_weights, q_sample


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    sampler: str = "ddim"  # ddpm | ddim
    steps: int = 50  # DDIM steps (DDPM always takes all T)
    eta: float = 0.0  # DDIM noise: 0 deterministic, 1 = DDPM's variance
    guidance: float = 1.0  # classifier-free guidance weight w
    clip: float | None = 1.0  # clip predicted x_0 to the data range [-1, 1]


def to_model_range(images_uint8: Any) -> jax.Array:
    return jnp.asarray(images_uint8).astype(jnp.float32) / 127.5 - 1.0


def to_unit_range(x: jax.Array) -> jax.Array:
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


class TextToImage:
    def __init__(self, model: nn.Module, schedule: Schedule, caption_tokens_KPS: np.ndarray,
                 caption_lengths_KP: np.ndarray, uncond_prob: float = 0.15, min_snr_gamma: float = 5.0):
        self.model = model
        self.schedule = schedule
        self.captions = jnp.asarray(caption_tokens_KPS)
        self.caption_lengths = jnp.asarray(caption_lengths_KP)
        self.uncond_prob = uncond_prob
        self.min_snr_gamma = min_snr_gamma
        self._eval_batch = jax.jit(self._eval_batch_fn)
        self._sample = jax.jit(self._sample_fn, static_argnames=("image_shape", "num_samples", "config"))

    @property
    def max_len(self) -> int:
        return self.captions.shape[-1]

    def null_prompt(self, batch: int) -> tuple[jax.Array, jax.Array]:
        tokens = jnp.zeros((batch, self.max_len), jnp.int32).at[:, 0].set(START)
        return tokens, jnp.ones((batch,), jnp.int32)

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        x0 = to_model_range(batch["image"])
        B = x0.shape[0]
        tokens, lengths = self.null_prompt(B)
        # jitted: one compile of the whole init beats compiling each of its ops on its own (~2x)
        return jax.jit(self.model.init)({"params": rng}, x0, jnp.zeros((B,), jnp.int32), tokens, lengths)

    def _prompts_for(self, labels_B: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A random phrasing of each label; the null prompt with probability uncond_prob."""
        k_phrase, k_drop = jax.random.split(key)
        B = labels_B.shape[0]
        phrase_B = jax.random.randint(k_phrase, (B,), 0, self.captions.shape[1])
        tokens_BS, lengths_B = self.captions[labels_B, phrase_B], self.caption_lengths[labels_B, phrase_B]
        drop_B = jax.random.bernoulli(k_drop, self.uncond_prob, (B,))
        null_tokens, null_lengths = self.null_prompt(B)
        return jnp.where(drop_B[:, None], null_tokens, tokens_BS), jnp.where(drop_B, null_lengths, lengths_B)

    def _denoising_loss(self, params: Any, x0: jax.Array, tokens_BS, lengths_B, key: jax.Array, train: bool,
                        dropout_key: jax.Array | None = None) -> jax.Array:
        k_t, k_eps = jax.random.split(key)
        B = x0.shape[0]
        t_B = jax.random.randint(k_t, (B,), 0, self.schedule.num_timesteps)
        eps = jax.random.normal(k_eps, x0.shape)
        rngs = {"dropout": dropout_key} if train else {}
        pred = self.model.apply(params, q_sample(self.schedule, x0, t_B, eps), t_B, tokens_BS, lengths_B,
                                train=train, rngs=rngs)
        mse_B = jnp.mean(jnp.square(pred - eps), axis=tuple(range(1, x0.ndim)))
        return mse_B * loss_weights(self.schedule, t_B, self.min_snr_gamma)

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict]:
        k_prompt, k_noise, k_dropout = jax.random.split(rng, 3)
        tokens_BS, lengths_B = self._prompts_for(batch["label"], k_prompt)
        loss = self._denoising_loss(params, to_model_range(batch["image"]), tokens_BS, lengths_B, k_noise, True,
                                    k_dropout).mean()
        return loss, {"loss": loss}

    def _eval_batch_fn(self, params: Any, batch: dict[str, jax.Array], key: jax.Array) -> jax.Array:
        labels_B = batch["label"]
        tokens_BS, lengths_B = self.captions[labels_B, 0], self.caption_lengths[labels_B, 0]
        losses_B = self._denoising_loss(params, to_model_range(batch["image"]), tokens_BS, lengths_B, key, False)
        return jnp.where(batch["mask"], losses_B, 0.0).sum()

    def evaluate(self, params: Any, batches: Iterable[dict[str, np.ndarray]], seed: int = 0) -> dict[str, float]:
        """The loss on held-out images with each class's first caption, at the same t and noise every call."""
        total, n = 0.0, 0
        for i, batch in enumerate(batches):
            total += float(self._eval_batch(params, batch, jax.random.fold_in(jax.random.key(seed), i)))
            n += int(batch["mask"].sum())
        return {"loss": total / n}

    def _sample_fn(self, params: Any, tokens_PS: jax.Array, lengths_P: jax.Array, key: jax.Array,
                   image_shape: tuple[int, int, int], num_samples: int, config: SamplerConfig,
                   guidance: jax.Array) -> jax.Array:
        n = num_samples
        null_tokens, null_lengths = self.null_prompt(1)
        null_ctx = self.model.apply(params, null_tokens, null_lengths, method="encode")[0]

        def one_prompt(tokens_S: jax.Array, length: jax.Array, key: jax.Array) -> jax.Array:
            ctx = self.model.apply(params, tokens_S[None], length[None], method="encode")[0]
            ctx_2nSD = jnp.concatenate([jnp.broadcast_to(ctx, (n, *ctx.shape)),
                                        jnp.broadcast_to(null_ctx, (n, *null_ctx.shape))])
            lengths_2n = jnp.concatenate([jnp.full((n,), length), jnp.full((n,), null_lengths[0])])

            def eps_fn(x_nHWC: jax.Array, t_n: jax.Array) -> jax.Array:
                eps = self.model.apply(params, jnp.concatenate([x_nHWC, x_nHWC]), jnp.concatenate([t_n, t_n]),
                                       ctx_2nSD, lengths_2n, method="denoise")
                return guided(eps[:n], eps[n:], guidance)

            k_init, k_steps = jax.random.split(key)
            x_T = jax.random.normal(k_init, (n, *image_shape))
            if config.sampler == "ddpm":
                x0 = ddpm_sample(eps_fn, self.schedule, x_T, k_steps, config.clip)
            else:
                x0 = ddim_sample(eps_fn, self.schedule, x_T, k_steps, config.steps, config.eta, config.clip)
            return to_unit_range(x0)

        keys = jax.random.split(key, tokens_PS.shape[0])
        return jax.vmap(one_prompt)(tokens_PS, lengths_P, keys)

    def sample(self, params: Any, tokens_PS: np.ndarray, lengths_P: np.ndarray, key: jax.Array,
               image_shape: tuple[int, int, int], num_samples: int, config: SamplerConfig) -> jax.Array:
        """Images in [0, 1], shape (prompts, num_samples, H, W, C)."""
        return self._sample(params, jnp.asarray(tokens_PS), jnp.asarray(lengths_P), key, tuple(image_shape),
                            num_samples, config, jnp.float32(config.guidance))

    def compiled_sampler(self, params: Any, tokens_PS: np.ndarray, lengths_P: np.ndarray, key: jax.Array,
                         image_shape: tuple[int, int, int], num_samples: int, config: SamplerConfig):
        """The sampler compiled ahead of time (to time sampling apart from compilation): call it with no args."""
        args = (params, jnp.asarray(tokens_PS), jnp.asarray(lengths_P), key)
        compiled = self._sample.lower(*args, tuple(image_shape), num_samples, config,
                                      jnp.float32(config.guidance)).compile()
        return functools.partial(compiled, *args, jnp.float32(config.guidance))
