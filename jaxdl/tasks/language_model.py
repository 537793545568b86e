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
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.errors import UsageError


def sample_logits(logits_BV: jax.Array, key: jax.Array, temperature: float | jax.Array, top_k: int = 0,
                  top_p: float | jax.Array = 1.0) -> jax.Array:
    """Greedy at temperature 0; otherwise a draw from softmax(logits / temperature), restricted to
    the `top_k` most likely tokens when top_k > 0, and to the smallest set of most likely tokens
    whose probability (at this temperature) reaches `top_p` when top_p < 1 (nucleus sampling)."""
    if top_k:
        kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    greedy_B = jnp.argmax(logits_BV, axis=-1)
    scaled_BV = logits_BV / jnp.maximum(temperature, 1e-6)
    sorted_BV = -jnp.sort(-scaled_BV, axis=-1)
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV  # probability of the more likely tokens
    kept = jnp.sum(before_BV < top_p, axis=-1, keepdims=True)  # >= 1: the most likely token always stays
    cutoff_B1 = jnp.take_along_axis(sorted_BV, kept - 1, axis=-1)
    scaled_BV = jnp.where(scaled_BV < cutoff_B1, -jnp.inf, scaled_BV)
    drawn_B = jax.random.categorical(key, scaled_BV, axis=-1)
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
                 temperature: float = 1.0, top_k: int = 0, lengths_B: np.ndarray | None = None,
                 top_p: float = 1.0, stop_token: int | None = None) -> np.ndarray:
        """`new_tokens` tokens after each prompt (prompts right-padded, `lengths_B` real lengths).

        One jitted program: the prompts in one call (a prefill), then a `lax.while_loop` of one-token
        steps threading the carry (recurrent state or key/value cache). With `stop_token`, a sequence
        that has drawn it is finished (the rest of its row is `stop_token`), and the loop ends once
        every sequence is. A model with a context (`max_len`, a transformer) refuses a longer
        prompt; past the context it goes on in windows: the last half context of each sequence is
        prefilled again and generation continues from it (the window slides by half a context).
        """
        prompt_BT = np.asarray(prompt_BT, np.int32)
        B, T = prompt_BT.shape
        lengths_B = np.full(B, T) if lengths_B is None else np.asarray(lengths_B)
        context = getattr(self.model, "max_len", None)
        if context is not None and context < 2:
            raise UsageError(f"generation needs a context of at least 2 tokens, the model has {context}")
        if context is not None and T > context:
            raise UsageError(f"a prompt of {T} tokens is longer than the model's context of {context} tokens")
        stop = -1 if stop_token is None else stop_token
        run = lambda prompt, lengths, n, key: np.asarray(_generate(
            self.model, n, top_k, stop, params, jnp.asarray(prompt), jnp.asarray(lengths, jnp.int32), key,
            jnp.float32(temperature), jnp.float32(top_p)))
        if context is None or T + new_tokens <= context:
            return run(prompt_BT, lengths_B, new_tokens, key)
        return _slide_windows(run, prompt_BT, lengths_B, new_tokens, key, context, stop)


def _slide_windows(run: Callable, prompt_BT: np.ndarray, lengths_B: np.ndarray, new_tokens: int, key: jax.Array,
                   context: int, stop: int) -> np.ndarray:
    """Generation past the context: `run(window_BT, lengths_B, n, key) -> (B, n)` fills the context,
    then the last half context of each sequence is prefilled again, and so on."""
    B = len(prompt_BT)
    rows = [list(prompt_BT[b, :lengths_B[b]]) for b in range(B)]
    keep = max(1, context // 2)
    window_BT, window_lengths, made, segment = prompt_BT, lengths_B, 0, 0
    while made < new_tokens:
        n = min(new_tokens - made, context - window_BT.shape[1])
        for row, new in zip(rows, run(window_BT, window_lengths, n, jax.random.fold_in(key, segment))):
            row.extend(new.tolist())
        made, segment = made + n, segment + 1
        if stop >= 0 and all(stop in row[length:] for row, length in zip(rows, lengths_B)):
            break
        window_lengths = np.array([min(len(r), keep) for r in rows])
        window_BT = np.zeros((B, keep), np.int32)
        for b, row in enumerate(rows):
            window_BT[b, :window_lengths[b]] = row[len(row) - window_lengths[b]:]
    out_BS = np.full((B, new_tokens), max(stop, 0), np.int32)
    for b, row in enumerate(rows):
        new = row[lengths_B[b]:]
        if stop in new:  # a later window does not know the sequence had finished
            new = new[:new.index(stop) + 1]
        out_BS[b, :len(new)] = new
    return out_BS


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _generate(model: nn.Module, new_tokens: int, top_k: int, stop_token: int, params: Any, prompt_BT: jax.Array,
              lengths_B: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array) -> jax.Array:
    logits_BTV, carry = model.apply(params, prompt_BT, None, lengths_B)
    last_BV = jnp.take_along_axis(logits_BTV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
    step = lambda token_B1, carry: model.apply(params, token_B1, carry)
    return sampling_loop(step, last_BV, carry, new_tokens, key, temperature, top_k, top_p, stop_token)


def sampling_loop(step: Callable[[jax.Array, Any], tuple[jax.Array, Any]], logits_BV: jax.Array, carry: Any,
                  new_tokens: int, key: jax.Array, temperature: jax.Array | float = 0.0, top_k: int = 0,
                  top_p: jax.Array | float = 1.0, stop_token: int = -1) -> jax.Array:
    """Draw up to `new_tokens` tokens (B, new_tokens) in a `lax.while_loop`: sample from the logits,
    feed the token back through `step(token_B1, carry) -> (logits_B1V, carry)`. A sequence that
    draws `stop_token` (>= 0) is finished: the rest of its row is `stop_token`, and the loop ends
    once all are. Token i's key is fold_in(key, i)."""
    B = logits_BV.shape[0]

    def more(state) -> jax.Array:
        i, _, _, done_B, _ = state
        return (i < new_tokens) & ~jnp.all(done_B)

    def body(state):
        i, carry, logits_BV, done_B, out_BS = state
        token_B = sample_logits(logits_BV, jax.random.fold_in(key, i), temperature, top_k, top_p)
        token_B = jnp.where(done_B, stop_token, token_B)
        out_BS = jax.lax.dynamic_update_slice_in_dim(out_BS, token_B[:, None], i, axis=1)
        logits_B1V, carry = step(token_B[:, None], carry)
        return i + 1, carry, logits_B1V[:, 0], done_B | (token_B == stop_token), out_BS

    init = (jnp.int32(0), carry, logits_BV, jnp.zeros(B, bool), jnp.full((B, new_tokens), max(stop_token, 0), jnp.int32))
    return jax.lax.while_loop(more, body, init)[-1]
