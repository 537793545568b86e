"""Long-range recall: the loss and evaluation of a sequence classifier on delayed recall, and the
gradient of that loss with respect to the hidden state k steps back (the vanishing gradient, measured).

The classifier (`jaxdl.models.recurrent.SequenceClassifier`, one layer) reads the whole sequence and
names the symbol from its final hidden state; the loss is softmax cross-entropy on that one answer.

`hidden_gradient_norms` runs the same model as a plain `lax.scan` over `cell_step`, adding a
perturbation eps_t (zero) to the hidden state after each step t, so that d loss / d eps_t is
d loss / d h_t: the total derivative through every later step. Its norm against the distance
k = T - 1 - t from the last step shows how much of the error signal reaches k steps back.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.models.recurrence import cell_step, hidden_of
from jaxdl.models.recurrent import SequenceClassifier

EVAL_CHUNK = 256  # test sequences per evaluation call: bounds the memory of long sequences times many models


class RecallTask:
    """init / loss / evaluate for the engine; `evaluate` takes N stacked models and their N test sets.

    Two choices of the start, both in `init` (the layers keep PyTorch's initialisation otherwise):
    embed_std: the embeddings drawn from N(0, embed_std^2), as the language model's (1.0); Flax's
        default (about 1/sqrt(embed)) makes the one symbol's push on the state small, so every
        cell learns slower, whatever the lag.
    forget_bias: added to the LSTM's forget-gate bias (1.0: Keras's `unit_forget_bias`, Gers et
        al. 2000; 0: PyTorch's start, where the forget gate is about 0.5 and the cell state halves
        each step until training opens it).
    """

    def __init__(self, model: SequenceClassifier, embed_std: float = 1.0, forget_bias: float = 0.0):
        if model.layers != 1 or model.bidirectional or not model.vocab_size:
            raise ValueError("the recall task reads token ids through one forward layer")
        self.model, self.embed_std, self.forget_bias = model, embed_std, forget_bias
        self._metrics_many = jax.jit(jax.vmap(self._sums))
        self._init_jitted = jax.jit(self._init)  # one compile for every seed, not one per op

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        return self._init_jitted(rng, batch["tokens"][:1])

    def _init(self, rng: jax.Array, tokens_1T: jax.Array) -> Any:
        k_model, k_embed = jax.random.split(rng)
        params = self.model.init(k_model, tokens_1T)
        p = params["params"]
        table = p["Embed_0"]["embedding"]
        embed = self.embed_std * jax.random.normal(k_embed, table.shape, table.dtype)
        layer = dict(p["Recurrent_0"]["layer0"])
        if self.model.cell == "lstm":  # PyTorch's gate order i, f, g, o: f is the second quarter
            H = layer["w_hh"].shape[0]
            layer["b_ih"] = layer["b_ih"].at[H:2 * H].add(self.forget_bias)
        return {"params": {**p, "Embed_0": {"embedding": embed}, "Recurrent_0": {"layer0": layer}}}

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict]:
        logits_BK = self.model.apply(params, batch["tokens"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits_BK, batch["label"]).mean()
        return loss, {"loss": loss, "accuracy": (logits_BK.argmax(-1) == batch["label"]).mean()}

    def _sums(self, params: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        logits_BK = self.model.apply(params, batch["tokens"])
        losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BK, batch["label"])
        return losses_B.sum(), (logits_BK.argmax(-1) == batch["label"]).sum()

    def evaluate(self, params_N: Any, test_N: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per model: mean loss and accuracy over its whole test set (arrays of shape (N,))."""
        n = test_N["label"].shape[1]
        loss_N, correct_N = 0.0, 0
        for start in range(0, n, EVAL_CHUNK):
            chunk = {k: v[:, start:start + EVAL_CHUNK] for k, v in test_N.items()}
            s, c = jax.device_get(self._metrics_many(params_N, chunk))
            loss_N, correct_N = loss_N + np.asarray(s, np.float64), correct_N + np.asarray(c, np.int64)
        return {"loss": loss_N / n, "accuracy": correct_N / n}


def _layer(params: Any) -> tuple[dict, jax.Array, dict]:
    """(recurrent layer weights, embedding table, output layer) of a one-layer SequenceClassifier."""
    p = params["params"]
    return p["Recurrent_0"]["layer0"], p["Embed_0"]["embedding"], p["Dense_0"]


def unrolled_logits(cell: str, params: Any, tokens_BT: jax.Array, eps_TBH: jax.Array) -> jax.Array:
    """The classifier's logits computed step by step, eps_t added to the hidden state after step t
    (zeros: the model's own logits)."""
    layer, table, dense = _layer(params)
    x_TBE = jnp.swapaxes(table[tokens_BT], 0, 1).astype(eps_TBH.dtype)
    B, H = tokens_BT.shape[0], layer["w_hh"].shape[0]
    h_BH = jnp.zeros((B, H), eps_TBH.dtype)
    carry = (h_BH, h_BH) if cell == "lstm" else h_BH

    def step(carry, inputs):
        x_BE, eps_BH = inputs
        xg_BG = x_BE @ layer["w_ih"] + layer["b_ih"]
        hg_BG = hidden_of(carry) @ layer["w_hh"] + layer["b_hh"]
        carry, h_BH = cell_step(cell, xg_BG, hg_BG, carry)
        h_BH = h_BH + eps_BH
        return ((h_BH, carry[1]) if cell == "lstm" else h_BH), None

    carry, _ = jax.lax.scan(step, carry, (x_TBE, eps_TBH))
    return hidden_of(carry) @ dense["kernel"] + dense["bias"]


def unrolled_loss(cell: str, params: Any, tokens_BT: jax.Array, label_B: jax.Array, eps_TBH: jax.Array) -> jax.Array:
    """The summed cross-entropy, so each example's gradient is its own loss's."""
    logits_BK = unrolled_logits(cell, params, tokens_BT, eps_TBH)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BK, label_B).sum()


def hidden_gradients(cell: str, params: Any, tokens_BT: jax.Array, label_B: jax.Array,
                     dtype=jnp.float32) -> jax.Array:
    """d loss_b / d h_t for every step t and example b: (T, B, H)."""
    T, B = tokens_BT.shape[1], tokens_BT.shape[0]
    H = _layer(params)[0]["w_hh"].shape[0]
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    eps_TBH = jnp.zeros((T, B, H), dtype)
    return jax.grad(unrolled_loss, argnums=4)(cell, params, tokens_BT, label_B, eps_TBH)


def hidden_gradient_norms(cell: str, params: Any, batch: dict[str, Any]) -> np.ndarray:
    """Mean over examples of ||d loss / d h_{T-1-k}||, for k = 0 .. T-1 (index k: k steps back)."""
    grads_TBH = _hidden_gradients_jit(cell, params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["label"]))
    norms_TB = np.linalg.norm(np.asarray(grads_TBH, np.float64), axis=-1)
    return norms_TB.mean(axis=1)[::-1]


_hidden_gradients_jit = jax.jit(hidden_gradients, static_argnums=(0, 4))
