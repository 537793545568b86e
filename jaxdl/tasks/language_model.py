"""Language modelling: next-token cross-entropy, validation in nats and bits per character, sampling.

Works with any model whose `apply(params, tokens_BT, carry=None, lengths_B=None, train=...)`
returns `(logits_BTV, carry)`: the carry is a recurrent state (or a key/value cache) that lets
generation go on one token at a time.

Validation loss: the mean next-token cross-entropy, in nats, over the whole validation split cut
into non-overlapping windows of `seq_len`, each started from a fresh (zero) state.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


def sample_logits(logits_BV: jax.Array, key: jax.Array, temperature: float | jax.Array, top_k: int = 0) -> jax.Array:
    """Greedy at temperature 0; otherwise a draw from softmax(logits / temperature), restricted to
    the `top_k` most likely tokens when top_k > 0."""
    if top_k:
        kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    greedy_B = jnp.argmax(logits_BV, axis=-1)
    drawn_B = jax.random.categorical(key, logits_BV / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, drawn_B, greedy_B).astype(jnp.int32)


class LanguageModel:
    """The task the engine trains: `loss`, `evaluate`, `generate` for one model."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._eval_batch = jax.jit(self._eval_batch_fn)

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        # jitted: one compile instead of an op-by-op run of the scanned forward pass
        return jax.jit(self.model.init)({"params": rng}, jnp.asarray(batch["tokens"][:, :-1]))

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict]:
        tokens_BT1 = batch["tokens"]
        logits_BTV, _ = self.model.apply(params, tokens_BT1[:, :-1], train=True, rngs={"dropout": rng})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, tokens_BT1[:, 1:]).mean()
        return loss, {"loss": loss}

    def _eval_batch_fn(self, params: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        tokens_BT1, mask_BT = batch["tokens"], batch["mask"]
        logits_BTV, _ = self.model.apply(params, tokens_BT1[:, :-1])
        nll_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, tokens_BT1[:, 1:])
        hits_BT = logits_BTV.argmax(-1) == tokens_BT1[:, 1:]
        return jnp.where(mask_BT, nll_BT, 0.0).sum(), (hits_BT & mask_BT).sum()

    def evaluate(self, params: Any, batches: Iterable[dict[str, np.ndarray]], tokens_per_char: float = 1.0) -> dict[str, float]:
        """loss (nats per token), bpc (bits per character: per token times tokens per character,
        1 for a character tokenizer), perplexity and next-token accuracy over every masked-in
        target of `batches`."""
        nll, hits, n = 0.0, 0, 0
        for batch in batches:
            s, h = self._eval_batch(params, batch)
            nll, hits, n = nll + float(s), hits + int(h), n + int(batch["mask"].sum())
        loss = nll / n
        return {"loss": loss, "bpc": loss / math.log(2) * tokens_per_char, "perplexity": math.exp(min(loss, 50.0)),
                "accuracy": hits / n}

    def generate(self, params: Any, prompt_BT: np.ndarray, key: jax.Array, new_tokens: int,
                 temperature: float = 1.0, top_k: int = 0, lengths_B: np.ndarray | None = None) -> np.ndarray:
        """`new_tokens` tokens after each prompt (prompts right-padded, `lengths_B` real lengths).
        One jitted program: the prompt in one call, then a scan of one-token steps with the carry."""
        prompt_BT = jnp.asarray(prompt_BT, jnp.int32)
        if lengths_B is None:
            lengths_B = np.full(prompt_BT.shape[0], prompt_BT.shape[1])
        return np.asarray(_generate(self.model, new_tokens, top_k, params, prompt_BT,
                                    jnp.asarray(lengths_B, jnp.int32), key, jnp.float32(temperature)))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _generate(model: nn.Module, new_tokens: int, top_k: int, params: Any, prompt_BT: jax.Array,
              lengths_B: jax.Array, key: jax.Array, temperature: jax.Array) -> jax.Array:
    logits_BTV, carry = model.apply(params, prompt_BT, None, lengths_B)
    last_BV = jnp.take_along_axis(logits_BTV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]

    def step(state, i):
        carry, logits_BV = state
        token_B = sample_logits(logits_BV, jax.random.fold_in(key, i), temperature, top_k)
        logits_B1V, carry = model.apply(params, token_B[:, None], carry)
        return (carry, logits_B1V[:, 0]), token_B

    _, tokens_SB = jax.lax.scan(step, (carry, last_BV), jnp.arange(new_tokens))
    return tokens_SB.T
