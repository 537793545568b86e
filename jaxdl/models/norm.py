"""Batch normalisation with PyTorch's arithmetic (`torch.nn.BatchNorm1d/2d`), as a Flax module.

    training:    y = (x - mean_B) / sqrt(var_B + eps) * scale + bias      (biased batch variance)
                 running_mean <- (1 - momentum) running_mean + momentum mean_B
                 running_var  <- (1 - momentum) running_var  + momentum var_B * n / (n - 1)
    evaluation:  y = (x - running_mean) / sqrt(running_var + eps) * scale + bias

The statistics are over every axis but the last (features/channels, NHWC), n values per feature.
momentum 0.1 and eps 1e-5 are PyTorch's defaults. `flax.linen.BatchNorm` keeps the *biased*
variance as its running average (and writes momentum as 1 - PyTorch's), so its running variance
and hence its evaluation outputs differ from PyTorch's by n / (n - 1); this module keeps PyTorch's.
Parameter and statistic names are Flax's (`scale`, `bias`; `batch_stats`: `mean`, `var`).

The running statistics live in the `batch_stats` collection: apply with `mutable=["batch_stats"]`
while training to get them back. Under `jax.jit` with a batch sharded over devices, the batch
mean and variance are those of the whole global batch (XLA inserts the cross-device sums), so N
data-parallel devices keep the same statistics as one device on the same batch.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("none", "batch")


class BatchNorm(nn.Module):
    momentum: float = 0.1  # PyTorch's convention: the weight of the new batch's statistics
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            n = x.size // features
            if n < 2:
                raise ValueError("batch norm needs more than one value per feature while training "
                                 f"(input of shape {x.shape}): use a larger batch")
            x32 = x.astype(jnp.float32)
            mean = x32.mean(axes)
            var = jnp.square(x32 - mean).mean(axes)  # two passes: no cancellation for large means
            if not self.is_initializing():
                m = self.momentum
                running_mean.value = (1 - m) * running_mean.value + m * mean
                running_var.value = (1 - m) * running_var.value + m * var * (n / (n - 1))
        else:
            mean, var = running_mean.value, running_var.value
        y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return y.astype(x.dtype)


def normalise(kind: str, name: str):
    """The normalisation layer `kind` ("none" | "batch") as `f(x, train)`: identity for "none"."""
    if kind == "none":
        return lambda x, train: x
    if kind == "batch":
        return BatchNorm(name=name)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")
