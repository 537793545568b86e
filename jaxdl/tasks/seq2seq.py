"""Sequence to sequence: teacher-forced cross-entropy, greedy decoding with a key/value cache, exact match.

Works with `jaxdl.models.transformer.EncoderDecoder` (or any module with the same `__call__`,
`encode` and `decode`). Batches are dicts of int arrays: `source` (B, S), `source_lengths` (B,),
`target_in` (B, T) = BOS + target, `target_out` (B, T) = target + EOS, `target_mask` (B, T) True
where target_out counts (see `jaxdl.data.sequence_tasks`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.tasks.language_model import sampling_loop


class Seq2Seq:
    """The task the engine trains: `loss`, `generate` and `evaluate` for one encoder-decoder."""

    def __init__(self, model: nn.Module, bos: int, eos: int):
        self.model, self.bos, self.eos = model, bos, eos
        self._eval_batch = jax.jit(self._eval_batch_fn)

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        return jax.jit(self.model.init)({"params": rng}, jnp.asarray(batch["source"]),
                                        jnp.asarray(batch["source_lengths"]), jnp.asarray(batch["target_in"]))

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict]:
        """Mean cross-entropy over the target tokens (and EOS) that count."""
        logits_BTV = self.model.apply(params, batch["source"], batch["source_lengths"], batch["target_in"],
                                      train=True, rngs={"dropout": rng})
        nll_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["target_out"])
        mask_BT = batch["target_mask"]
        n = jnp.maximum(mask_BT.sum(), 1)
        loss = jnp.where(mask_BT, nll_BT, 0.0).sum() / n
        hits = (logits_BTV.argmax(-1) == batch["target_out"]) & mask_BT
        return loss, {"loss": loss, "token_accuracy": hits.sum() / n}

    def _eval_batch_fn(self, params, batch):
        context_BSD = self.model.apply(params, batch["source"], batch["source_lengths"], method="encode")
        logits_BTV, _ = self.model.apply(params, batch["target_in"], context_BSD, batch["source_lengths"],
                                         method="decode")  # teacher forcing, on the one encoding
        nll_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["target_out"])
        mask_BT = batch["target_mask"]
        out_BT = _decode_greedy(self.model, batch["target_out"].shape[1], self.bos, self.eos, params, context_BSD,
                                batch["source_lengths"])
        exact_B = jnp.all((out_BT == batch["target_out"]) | ~mask_BT, axis=1)  # every token up to and with EOS
        teacher_hits = (logits_BTV.argmax(-1) == batch["target_out"]) & mask_BT
        return jnp.where(mask_BT, nll_BT, 0.0).sum(), teacher_hits.sum(), mask_BT.sum(), exact_B, out_BT

    def evaluate(self, params: Any, batch: dict[str, np.ndarray], chunk: int = 500) -> dict[str, Any]:
        """Over every example of `batch` (in chunks): loss and token accuracy under teacher forcing,
        and exact match: the greedy output equals the target, EOS included. `outputs` holds the
        generated token rows and each example's exact match."""
        n = len(batch["source"])
        totals, outs, exact = np.zeros(3), [], []
        for lo in range(0, n, chunk):
            part = {k: jnp.asarray(v[lo:lo + chunk]) for k, v in batch.items()}
            *sums, exact_B, out = self._eval_batch(params, part)
            totals += np.array([float(s) for s in sums])
            outs.append(np.asarray(out))
            exact.append(np.asarray(exact_B))
        nll, hits, tokens = totals
        exact_N = np.concatenate(exact)
        return {"loss": nll / tokens, "token_accuracy": hits / tokens, "exact_match": float(exact_N.mean()),
                "outputs": {"tokens": np.concatenate(outs), "exact": exact_N}}

    def generate(self, params: Any, source_BS: np.ndarray, source_lengths_B: np.ndarray, max_tokens: int) -> np.ndarray:
        """Greedy decoding: up to `max_tokens` tokens per source, ending with EOS (then EOS-filled)."""
        return np.asarray(_greedy(self.model, max_tokens, self.bos, self.eos, params,
                                  jnp.asarray(source_BS, jnp.int32), jnp.asarray(source_lengths_B, jnp.int32)))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _greedy(model: nn.Module, max_tokens: int, bos: int, eos: int, params: Any, source_BS: jax.Array,
            source_lengths_B: jax.Array) -> jax.Array:
    context_BSD = model.apply(params, source_BS, source_lengths_B, method="encode")
    return _decode_greedy(model, max_tokens, bos, eos, params, context_BSD, source_lengths_B)


def _decode_greedy(model: nn.Module, max_tokens: int, bos: int, eos: int, params: Any, context_BSD: jax.Array,
                   source_lengths_B: jax.Array) -> jax.Array:
    """Prefill the decoder with BOS, then one cached step per token, until EOS."""
    decode = functools.partial(model.apply, params, context_BSD=context_BSD, source_lengths_B=source_lengths_B,
                               method="decode")
    bos_B1 = jnp.full((context_BSD.shape[0], 1), bos, jnp.int32)
    logits_B1V, cache = decode(bos_B1)
    step = lambda token_B1, cache: decode(token_B1, cache=cache)
    return sampling_loop(step, logits_B1V[:, 0], cache, max_tokens, jax.random.key(0), stop_token=eos)
