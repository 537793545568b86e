"""A text-conditioned U-Net noise predictor for diffusion, NHWC.

    eps = UNet(x_t, t, text states)

Down path: at each of `levels` resolutions, `blocks` residual blocks (GroupNorm, SiLU, 3x3 conv;
the time-and-text embedding scales and shifts the second norm), then a stride-2 conv halves the
size. Middle, at the lowest resolution: residual block, self-attention over the pixels,
cross-attention to the text, residual block. Up path: `blocks + 1` residual blocks per level, each
fed the matching down-path activation (concatenated), then nearest-neighbour resize x2 + 3x3 conv
(transposed convolutions are slow on XLA:CPU). Below the top level every residual block is followed
by cross-attention to the text's token states; the text's mean state is also added to the time
embedding, so every block sees the prompt. The last conv starts at zero: the untrained net
predicts eps = 0.

`TextConditionedUNet` is the whole denoiser: a transformer `Encoder` over the prompt's tokens plus
the U-Net, trained jointly. `encode` runs once per prompt; `denoise` runs at every sampling step.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.attention import MultiHeadAttention, padding_mask, sinusoidal_at
from jaxdl.models.transformer import Encoder


def level_channels(channels: int, level: int) -> int:
    return channels * 2 ** level


def check_image_size(image_size: int, levels: int) -> None:
    """Raise ValueError unless `image_size` halves `levels - 1` times to a size of at least 2."""
    halvings = levels - 1
    if levels < 1 or image_size < 2 ** (halvings + 1) or image_size % 2 ** halvings:
        raise ValueError(f"a {levels}-level U-Net halves the image {halvings} times: the size must be a multiple of "
                         f"{2 ** halvings} and at least {2 ** (halvings + 1)}, got {image_size}")


def _group_norm(channels: int, groups: int, name: str | None = None) -> nn.GroupNorm:
    g = groups
    while channels % g:  # the largest group count <= groups that divides the channels
        g -= 1
    return nn.GroupNorm(num_groups=g, epsilon=1e-5, name=name)


class ResBlock(nn.Module):
    features: int
    groups: int = 8
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x_BHWC: jax.Array, emb_BE: jax.Array, train: bool) -> jax.Array:
        h = nn.Conv(self.features, (3, 3), name="conv1")(nn.silu(_group_norm(x_BHWC.shape[-1], self.groups)(x_BHWC)))
        scale_BF, shift_BF = jnp.split(nn.Dense(2 * self.features, name="film")(nn.silu(emb_BE)), 2, axis=-1)
        h = _group_norm(self.features, self.groups)(h) * (1 + scale_BF[:, None, None]) + shift_BF[:, None, None]
        h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=not train)
        h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros, name="conv2")(h)
        skip = x_BHWC if x_BHWC.shape[-1] == self.features else nn.Conv(self.features, (1, 1), name="skip")(x_BHWC)
        return skip + h


class AttentionBlock(nn.Module):
    """x + Attention(GroupNorm(x)) over the H*W pixels: self-attention, or cross-attention to a context."""

    num_heads: int
    groups: int = 8

    @nn.compact
    def __call__(self, x_BHWC: jax.Array, context_BSD: jax.Array | None = None,
                 context_mask: jax.Array | None = None) -> jax.Array:
        B, H, W, C = x_BHWC.shape
        h_BTC = _group_norm(C, self.groups)(x_BHWC).reshape(B, H * W, C)
        y_BTC, _ = MultiHeadAttention(self.num_heads, name="attention")(h_BTC, context_BSD, mask=context_mask)
        return x_BHWC + y_BTC.reshape(B, H, W, C)


class UNet(nn.Module):
    out_channels: int = 1
    channels: int = 64  # width of the top level; each lower level doubles it
    levels: int = 2  # resolutions: the image size and levels - 1 halvings of it
    blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    num_heads: int = 4
    groups: int = 8  # GroupNorm groups (fewer where the channels need it)
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x_BHWC: jax.Array, t_B: jax.Array, context_BSD: jax.Array, context_lengths_B: jax.Array,
                 train: bool = False) -> jax.Array:
        B, H, W, _ = x_BHWC.shape
        if H != W:
            raise ValueError(f"the U-Net wants square images, got {H}x{W}")
        check_image_size(H, self.levels)
        C, E = self.channels, 4 * self.channels
        mask = padding_mask(context_lengths_B, context_BSD.shape[1])
        real_BS1 = (jnp.arange(context_BSD.shape[1])[None, :] < context_lengths_B[:, None])[..., None]
        pooled_BD = (context_BSD * real_BS1).sum(1) / jnp.maximum(context_lengths_B, 1)[:, None]
        emb_BE = nn.Dense(E, name="time_in")(sinusoidal_at(t_B, C))
        emb_BE = nn.Dense(E, name="time_out")(nn.silu(emb_BE)) + nn.Dense(E, name="text_pooled")(pooled_BD)
        res = lambda f, name: ResBlock(f, self.groups, self.dropout, name=name)
        cross = lambda h, name: AttentionBlock(self.num_heads, self.groups, name=name)(h, context_BSD, mask)

        h = nn.Conv(C, (3, 3), name="conv_in")(x_BHWC)
        skips = [h]
        for level in range(self.levels):
            for i in range(self.blocks):
                h = res(level_channels(C, level), f"down{level}_res{i}")(h, emb_BE, train)
                if level > 0:
                    h = cross(h, f"down{level}_cross{i}")
                skips.append(h)
            if level < self.levels - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), name=f"down{level}_halve")(h)
                skips.append(h)
        bottom = level_channels(C, self.levels - 1)
        h = res(bottom, "mid_res0")(h, emb_BE, train)
        h = AttentionBlock(self.num_heads, self.groups, name="mid_self")(h)
        h = cross(h, "mid_cross")
        h = res(bottom, "mid_res1")(h, emb_BE, train)
        for level in reversed(range(self.levels)):
            for i in range(self.blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res(level_channels(C, level), f"up{level}_res{i}")(h, emb_BE, train)
                if level > 0:
                    h = cross(h, f"up{level}_cross{i}")
            if level > 0:
                Bh, Hh, Wh, Ch = h.shape
                h = jax.image.resize(h, (Bh, 2 * Hh, 2 * Wh, Ch), "nearest")
                h = nn.Conv(Ch, (3, 3), name=f"up{level}_double")(h)
        h = nn.silu(_group_norm(C, self.groups, "norm_out")(h))
        return nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros, name="conv_out")(h)


class TextConditionedUNet(nn.Module):
    """A transformer `Encoder` over prompt tokens and the `UNet` that attends to its states."""

    unet: dict  # UNet's fields
    text: dict  # Encoder's fields (vocab_size, d_model, num_layers, num_heads, max_len, ...)

    def setup(self) -> None:
        self.text_encoder = Encoder(**self.text)
        self.denoiser = UNet(**self.unet)

    def encode(self, tokens_BS: jax.Array, lengths_B: jax.Array, train: bool = False) -> jax.Array:
        return self.text_encoder(tokens_BS, lengths_B, train)

    def denoise(self, x_BHWC: jax.Array, t_B: jax.Array, context_BSD: jax.Array, lengths_B: jax.Array,
                train: bool = False) -> jax.Array:
        return self.denoiser(x_BHWC, t_B, context_BSD, lengths_B, train)

    def __call__(self, x_BHWC: jax.Array, t_B: jax.Array, tokens_BS: jax.Array, lengths_B: jax.Array,
                 train: bool = False) -> jax.Array:
        return self.denoise(x_BHWC, t_B, self.encode(tokens_BS, lengths_B, train), lengths_B, train)


def example_inputs(image_size: int, channels: int, max_len: int, batch: int = 1) -> tuple[Any, ...]:
    """Zeros shaped like the denoiser's inputs (for init)."""
    return (jnp.zeros((batch, image_size, image_size, channels)), jnp.zeros((batch,), jnp.int32),
            jnp.zeros((batch, max_len), jnp.int32), jnp.ones((batch,), jnp.int32))
