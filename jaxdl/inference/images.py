"""Text-to-image diffusion models and MLPs on vectors, loaded for use."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data import captions
from jaxdl.errors import UsageError
from jaxdl.inference.trained import Trained
from jaxdl.tasks.diffusion import make_schedule
from jaxdl.tasks.text_to_image import SamplerConfig, TextToImage


def draw_key(seed: int) -> jax.Array:
    """The key a diffusion run draws its judged samples with, for its --seed."""
    return jax.random.fold_in(jax.random.key(seed), 2)


class DiffusionModel(Trained):
    """`sample(prompts, num, ...)` -> images (P, num, H, W, C) in [0, 1], from the run's EMA params."""

    @property
    def _spec(self) -> dict:
        return self.info["diffusion"]

    def example_inputs(self) -> tuple:
        width = self._spec["max_prompt_bytes"] + 1
        return (jnp.zeros((1, *self._spec["image_shape"]), jnp.float32), jnp.zeros((1,), jnp.int32),
                jnp.zeros((1, width), jnp.int32), jnp.ones((1,), jnp.int32))

    @property
    def class_prompts(self) -> list[str]:
        return self._spec["class_prompts"]

    @functools.cached_property
    def task(self) -> TextToImage:
        s = self._spec
        tokens, lengths = captions.caption_table(s["class_names"], s["max_prompt_bytes"] + 1)
        return TextToImage(self.model, make_schedule(s["schedule"], s["timesteps"]), tokens, lengths)

    def sample(self, prompts: str | Sequence[str], num: int = 8, guidance: float = 1.0, steps: int = 50,
               eta: float = 0.0, seed: int = 0, sampler: str = "ddim") -> np.ndarray:
        """`num` images per prompt, float32 in [0, 1]: DDIM with `steps` steps and noise `eta`, or
        DDPM over every step; classifier-free guidance weight `guidance` (0 = conditional only)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        T = self._spec["timesteps"]
        if not prompts or any(not p.strip() for p in prompts):
            raise UsageError("give one or more non-empty prompts")
        if num < 1 or not guidance >= 0 or not eta >= 0 or not 1 <= steps <= T or sampler not in ("ddim", "ddpm"):
            raise UsageError(f"need num >= 1, guidance >= 0, eta >= 0, steps in 1..{T} and sampler ddim|ddpm; got "
                             f"{num}, {guidance}, {eta}, {steps}, {sampler!r}")
        tokens, lengths = captions.encode(prompts, self._spec["max_prompt_bytes"] + 1)
        config = SamplerConfig(sampler, steps, eta, guidance)
        images = self.task.sample(self.params, tokens, lengths, draw_key(seed), tuple(self._spec["image_shape"]),
                                  num, config)
        return np.asarray(images)


class VectorModel(Trained):
    """An MLP on feature vectors: `predict(x)` -> probabilities (binary cross-entropy) or values (MSE)."""

    def example_inputs(self) -> tuple:
        return (jnp.zeros((1, self.info["vector"]["inputs"]), jnp.float32),)

    @functools.cached_property
    def _apply(self):
        return jax.jit(self.model.apply)

    def predict(self, x: Any) -> np.ndarray:
        spec = self.info["vector"]
        x = np.asarray(x, np.float32)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != spec["inputs"]:
            raise UsageError(f"inputs must be (N, {spec['inputs']}) (or one ({spec['inputs']},) vector), got "
                             f"shape {np.shape(x)}")
        out = self._apply(self.params, x)
        return np.asarray(jax.nn.sigmoid(out) if spec["loss"] == "bce" else out)
