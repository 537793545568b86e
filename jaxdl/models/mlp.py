"""Multilayer perceptrons: a stack of dense layers with a chosen hidden non-linearity.

    x_BD -> dense0 -> act -> dense1 -> act -> ... -> dense{len(hidden)} -> logits_BO

`hidden` may be empty, which gives a linear model (one dense layer). The output has no
activation: it is logits, to be fed to a loss that applies sigmoid or softmax itself (numerically
safer than taking the log of a probability), or to `softmax` to read class probabilities.

The "identity" activation is there on purpose: without a hidden non-linearity a stack of dense
layers collapses to one affine map, which cannot separate XOR however wide or deep it is.
`jaxdl.models.backprop` computes this module's gradients by hand, layer by layer.

`norm="batch"` puts a batch norm (PyTorch's `BatchNorm1d` arithmetic, `jaxdl.models.norm`) between
each hidden dense layer (then without a bias, which the batch mean would cancel) and its activation; its running statistics live in `batch_stats` (apply
with `train=True, mutable=["batch_stats"]` while training).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.norm import normalise

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    # the exact erf form, so that its derivative Phi(z) + z phi(z) is exact too (see backprop.py)
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "identity": lambda x: x,
}


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}")


class MLP(nn.Module):
    hidden: tuple[int, ...]  # widths of the hidden layers, in order; () is a linear model
    out: int  # width of the output (number of classes, or of regression targets)
    activation: str = "relu"  # a key of ACTIVATIONS, applied after every hidden layer
    norm: str = "none"  # "none" or "batch": batch norm before every hidden activation

    @nn.compact
    def __call__(self, x_BD: jax.Array, train: bool = False) -> jax.Array:
        check_activation(self.activation)
        act = ACTIVATIONS[self.activation]
        x = x_BD
        for i, width in enumerate(self.hidden):
            dense = nn.Dense(width, use_bias=self.norm == "none", name=f"dense{i}")  # batch norm cancels a bias
            x = act(normalise(self.norm, f"norm{i}")(dense(x), train))
        return nn.Dense(self.out, name=f"dense{len(self.hidden)}")(x)


def softmax(logits: jax.Array) -> jax.Array:
    """Class probabilities from logits, along the last axis."""
    return jax.nn.softmax(logits, axis=-1)
