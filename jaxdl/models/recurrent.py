"""Recurrent nets: Elman RNN, LSTM and GRU layers scanned over time, with PyTorch's exact arithmetic.

The cells' equations and their time loop are in `jaxdl.models.recurrence`: the input projection of
every time step is one matmul, hoisted out of the loop; only the recurrent matmul runs inside it, and
the backward pass is scheduled as cuDNN's (`recurrence`).
Inputs are batch-first `(B, T, D)`; the carry mirrors PyTorch:
`h` of shape `(layers * directions, B, H)`, and `(h, c)` for the LSTM. Per-sequence `lengths`
stop each sequence's state at its last real step (padded outputs are zeros), and the reverse
direction reads each sequence backwards from its own last step, as `pack_padded_sequence` does.

Conversion to and from `torch.nn.RNN/LSTM/GRU` state dicts is in `jaxdl.convert.recurrent`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.models.recurrence import CELLS, GATES, Carry, recurrence


def reverse_in_time(x_TB: jax.Array, lengths_B: jax.Array | None) -> jax.Array:
    """Reverse each sequence (time-major) within its own length, padding left in place; an involution."""
    if lengths_B is None:
        return jnp.flip(x_TB, axis=0)
    t_T1 = jnp.arange(x_TB.shape[0])[:, None]
    idx_TB = jnp.where(t_T1 < lengths_B[None], lengths_B[None] - 1 - t_T1, t_T1)
    return jnp.take_along_axis(x_TB, idx_TB.reshape(idx_TB.shape + (1,) * (x_TB.ndim - 2)), axis=0)


def _torch_uniform(scale: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)
    return init


class RecurrentLayer(nn.Module):
    """One direction of one layer over a whole time-major sequence `(T, B, D) -> (T, B, H)`."""

    cell: str
    hidden: int
    unroll: int = 1

    @nn.compact
    def __call__(self, x_TBD: jax.Array, carry: Carry, mask_TB: jax.Array | None) -> tuple[jax.Array, Carry]:
        gh = GATES[self.cell] * self.hidden
        init = _torch_uniform(1.0 / np.sqrt(self.hidden))  # PyTorch's default for every weight and bias
        w_ih = self.param("w_ih", init, (x_TBD.shape[-1], gh))
        w_hh = self.param("w_hh", init, (self.hidden, gh))
        b_ih = self.param("b_ih", init, (gh,))
        b_hh = self.param("b_hh", init, (gh,))
        return recurrence(self.cell, w_ih, b_ih, w_hh, b_hh, x_TBD, carry, mask_TB, self.unroll)


class Recurrent(nn.Module):
    """A stack of recurrent layers (torch.nn.RNN/LSTM/GRU with batch_first=True).

    Returns `(y_BTO, carry)`: the last layer's outputs (O = hidden * directions, directions
    concatenated forward first) and the final carry, which can be fed back to continue.
    """

    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between layers, as PyTorch (not after the last)
    unroll: int = 1

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}: use one of {', '.join(CELLS)}")
        super().__post_init__()

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def initial_carry(self, batch: int, dtype=jnp.float32) -> Carry:
        h = jnp.zeros((self.layers * self.directions, batch, self.hidden), dtype)
        return (h, h) if self.cell == "lstm" else h

    @nn.compact
    def __call__(self, x_BTD: jax.Array, carry: Carry | None = None, lengths_B: jax.Array | None = None,
                 *, train: bool = False) -> tuple[jax.Array, Carry]:
        if carry is None:
            carry = self.initial_carry(x_BTD.shape[0], x_BTD.dtype)
        mask_TB = None if lengths_B is None else jnp.arange(x_BTD.shape[1])[:, None] < lengths_B[None]
        finals, y_TBD = [], jnp.swapaxes(x_BTD, 0, 1)  # time-major inside: each step reads one contiguous slab
        for layer in range(self.layers):
            outs = []
            for d in range(self.directions):
                k = layer * self.directions + d
                c0 = jax.tree.map(lambda a: a[k], carry)
                rnn = RecurrentLayer(self.cell, self.hidden, self.unroll, name=f"layer{layer}" + ("_reverse" if d else ""))
                if d == 0:
                    h_TBH, c = rnn(y_TBD, c0, mask_TB)
                else:
                    h_TBH, c = rnn(reverse_in_time(y_TBD, lengths_B), c0, mask_TB)
                    h_TBH = reverse_in_time(h_TBH, lengths_B)
                outs.append(h_TBH)
                finals.append(c)
            y_TBD = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
            if layer < self.layers - 1 and self.dropout > 0:
                y_TBD = nn.Dropout(self.dropout, deterministic=not train)(y_TBD)
        y = jnp.swapaxes(y_TBD, 0, 1)
        return y, jax.tree.map(lambda *cs: jnp.stack(cs), *finals)


def SimpleRNN(hidden: int, **kw: Any) -> Recurrent:
    return Recurrent("rnn", hidden, **kw)


def LSTM(hidden: int, **kw: Any) -> Recurrent:
    return Recurrent("lstm", hidden, **kw)


def GRU(hidden: int, **kw: Any) -> Recurrent:
    return Recurrent("gru", hidden, **kw)


def final_hidden(carry: Carry, directions: int) -> jax.Array:
    """The last layer's final hidden state, directions concatenated: `(B, H * directions)`."""
    h_LBH = carry[0] if isinstance(carry, tuple) else carry
    return jnp.concatenate(list(h_LBH[-directions:]), axis=-1)


class RecurrentLM(nn.Module):
    """A recurrent language model: embedding -> recurrent stack -> dropout -> vocabulary logits.

    `__call__(tokens_BT, carry=None, lengths_B=None, train=False) -> (logits_BTV, carry)`: the
    interface `jaxdl.tasks.language_model` trains and samples from.
    """

    vocab_size: int
    cell: str = "lstm"
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.0
    unroll: int = 1

    def setup(self) -> None:
        self.embedding = nn.Embed(self.vocab_size, self.embed, embedding_init=nn.initializers.normal(1.0))
        self.rnn = Recurrent(self.cell, self.hidden, self.layers, dropout=self.dropout, unroll=self.unroll)
        self.drop = nn.Dropout(self.dropout)
        self.head = nn.Dense(self.vocab_size)

    def initial_carry(self, batch: int) -> Carry:
        return Recurrent(self.cell, self.hidden, self.layers).initial_carry(batch)

    def __call__(self, tokens_BT: jax.Array, carry: Carry | None = None, lengths_B: jax.Array | None = None,
                 *, train: bool = False) -> tuple[jax.Array, Carry]:
        x_BTE = self.drop(self.embedding(tokens_BT), deterministic=not train)
        h_BTH, carry = self.rnn(x_BTE, carry, lengths_B, train=train)
        return self.head(self.drop(h_BTH, deterministic=not train)), carry


class SequenceClassifier(nn.Module):
    """Classify a whole sequence from the recurrent stack's final hidden state (both directions)."""

    num_classes: int
    vocab_size: int = 0  # > 0: the inputs are token ids, embedded first; 0: they are vectors (B, T, D)
    cell: str = "lstm"
    embed: int = 32
    hidden: int = 64
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, lengths_B: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        if self.vocab_size:
            x = nn.Embed(self.vocab_size, self.embed)(x)
        rnn = Recurrent(self.cell, self.hidden, self.layers, self.bidirectional, self.dropout)
        _, carry = rnn(x, None, lengths_B, train=train)
        h_BH = nn.Dropout(self.dropout, deterministic=not train)(final_hidden(carry, rnn.directions))
        return nn.Dense(self.num_classes)(h_BH)
