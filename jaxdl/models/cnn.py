"""MyNet: the seed's convolutional image classifier, NHWC.

    conv3x3 C->32, ReLU          conv3x3 32->64, ReLU, pool 2x2
    conv3x3 64->128, ReLU, pool 2x2
    flatten, dropout, dense -> 512, ReLU, dropout, dense -> num_classes (logits)

For 48x48x3 inputs and 10 classes: 896 + 18,496 + 73,856 + 9,437,696 + 5,130
= 9,536,074 parameters. Convolutions use "SAME" padding (PyTorch's padding=1),
so two 2x2 pools take 48x48 to 12x12 and the first dense layer sees
12 * 12 * 128 = 18,432 features. Flatten order is (H, W, C), PyTorch's is
(C, H, W): weight conversion permutes the first dense kernel's rows.

`norm="batch"` puts a batch norm (PyTorch's `BatchNorm2d` arithmetic, `jaxdl.models.norm`) between
each convolution and its ReLU, and drops the convolutions' biases (the batch mean would cancel them):
448 - 224 = 224 more parameters, and running statistics in the `batch_stats` collection (apply with
`mutable=["batch_stats"]` while training).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.norm import normalise


def _windows(x_BHWC: jax.Array) -> jax.Array:
    B, H, W, C = x_BHWC.shape
    return x_BHWC.reshape(B, H // 2, 2, W // 2, 2, C)


@jax.custom_vjp
def max_pool_2x2(x_BHWC: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, as reshape + max: the same values and gradients as `nn.max_pool`.

    Its backward pass routes each gradient to the first maximum of its window (row-major), exactly as
    XLA's select_and_scatter does for `nn.max_pool`, but as elementwise masks, which XLA:CPU runs
    several times faster than select_and_scatter.
    """
    return _windows(x_BHWC).max(axis=(2, 4))


def _max_pool_fwd(x_BHWC):
    y = max_pool_2x2(x_BHWC)
    return y, (x_BHWC, y)


def _max_pool_bwd(residuals, g_BhwC):
    x_BHWC, y = residuals
    is_max = _windows(x_BHWC) == y[:, :, None, :, None, :]
    taken = jnp.zeros_like(is_max[:, :, 0, :, 0])
    rows = []
    for i in range(2):
        cols = []
        for j in range(2):
            first = is_max[:, :, i, :, j] & ~taken  # the first maximum in row-major order gets it all
            taken = taken | first
            cols.append(jnp.where(first, g_BhwC, 0.0))
        rows.append(jnp.stack(cols, axis=3))
    return (jnp.stack(rows, axis=2).reshape(x_BHWC.shape),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


def pool_2x2(x_BHWC: jax.Array, kind: str) -> jax.Array:
    """2x2 pooling with stride 2: "max" or "avg"."""
    if kind == "max":
        return max_pool_2x2(x_BHWC)
    if kind == "avg":
        return _windows(x_BHWC).mean(axis=(2, 4))
    raise ValueError(f"pool must be 'max' or 'avg', got {kind!r}")


class MyNet(nn.Module):
    num_classes: int = 10
    image_size: int = 48  # any multiple of 4 (two 2x2 pools)
    in_channels: int = 3
    pool: str = "max"  # "max" or "avg"
    dropout_rate: float = 0.5
    norm: str = "none"  # "none" or "batch": batch norm after each convolution, before its ReLU

    @nn.compact
    def __call__(self, x_BHWC: jax.Array, train: bool = False) -> jax.Array:
        S, C = self.image_size, self.in_channels
        if S % 4:
            raise ValueError(f"MyNet image_size must be a multiple of 4, got {S}")
        if x_BHWC.ndim != 4 or x_BHWC.shape[1:] != (S, S, C):
            raise ValueError(f"MyNet wants inputs of shape (B, {S}, {S}, {C}), got {x_BHWC.shape}")
        # a bias before batch norm is subtracted right away with the mean: its gradient is float noise
        conv = lambda features, name: nn.Conv(features, (3, 3), padding="SAME", use_bias=self.norm == "none", name=name)
        norm = lambda x, i: normalise(self.norm, f"norm{i}")(x, train)
        x = nn.relu(norm(conv(32, "conv1")(x_BHWC), 1))
        x = nn.relu(norm(conv(64, "conv2")(x), 2))
        x = pool_2x2(x, self.pool)
        x = nn.relu(norm(conv(128, "conv3")(x), 3))
        x = pool_2x2(x, self.pool)
        x_BF = x.reshape(x.shape[0], -1)
        x_BF = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BF)
        x_BF = nn.relu(nn.Dense(512, name="fc1")(x_BF))
        x_BF = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BF)
        return nn.Dense(self.num_classes, name="fc2")(x_BF)

    def example_input(self, batch_size: int = 1) -> jax.Array:
        return jnp.zeros((batch_size, self.image_size, self.image_size, self.in_channels), jnp.float32)
