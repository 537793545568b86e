"""Attention: scaled dot-product, multi-head (self and cross, optionally grouped-query), a
key/value cache for incremental decoding, and positional encodings (sinusoidal, learned, rotary).

Shapes: B batch, T query positions, S key positions, D model width, N query heads, K key/value
heads (N a multiple of K; K = N is plain multi-head attention), H = D / N per head.

The softmax(QK^T / sqrt(H)) V itself is `jax.nn.dot_product_attention`, so on GPUs the cuDNN fused
kernel can be asked for (`implementation="cudnn"`, bf16); XLA's version everywhere else.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

POSITIONS = ("sinusoidal", "learned", "rope")


def sinusoidal(length: int, d_model: int, base: float = 10000.0) -> jax.Array:
    """Vaswani et al. (2017), sec. 3.5: PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(same). (length, d)."""
    return sinusoidal_at(jnp.arange(length), d_model, base)


def sinusoidal_at(positions: jax.Array, d_model: int, base: float = 10000.0) -> jax.Array:
    """The sinusoidal encoding of any (integer or real) positions: shape positions.shape + (d_model,)."""
    angle_TI = positions.astype(jnp.float32)[..., None] / base ** (jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)
    pe_TI2 = jnp.stack([jnp.sin(angle_TI), jnp.cos(angle_TI)], axis=-1)
    return pe_TI2.reshape(*positions.shape, -1)[..., :d_model]


def rope(x_BTNH: jax.Array, positions_BT: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding (Su et al. 2021): rotate each pair (x[i], x[i + H/2]) by
    position * base^(-2i/H). q.k then depends on positions only through their difference."""
    half = x_BTNH.shape[-1] // 2
    freq_I = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_BT1I = (positions_BT.astype(jnp.float32)[..., None] * freq_I)[:, :, None, :]
    cos, sin = jnp.cos(angle_BT1I), jnp.sin(angle_BT1I)
    x1, x2 = x_BTNH[..., :half].astype(jnp.float32), x_BTNH[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BTNH.dtype)


def causal_mask(q_positions_BT: jax.Array, length: int) -> jax.Array:
    """(B, 1, T, S) True where key position s <= the query's position: what a token may look at."""
    return jnp.arange(length)[None, None, None, :] <= q_positions_BT[:, None, :, None]


def padding_mask(lengths_B: jax.Array, length: int) -> jax.Array:
    """(B, 1, 1, S) True for the first lengths[b] key positions (the real tokens)."""
    return (jnp.arange(length)[None, :] < lengths_B[:, None])[:, None, None, :]


def write_cache(cache_BSKH: jax.Array, new_BTKH: jax.Array, start_B: jax.Array) -> jax.Array:
    """Write each sequence's new keys (or values) at its own offset `start[b]`."""
    return jax.vmap(lambda c, x, s: jax.lax.dynamic_update_slice_in_dim(c, x, s, axis=0))(cache_BSKH, new_BTKH, start_B)


class MultiHeadAttention(nn.Module):
    """softmax(Q K^T / sqrt(H) + mask) V over N heads, then the output projection.

    Self-attention: `mha(x)`; cross-attention: `mha(x, context)`. `mask` (broadcastable to
    (B, N, T, S), True = attend) covers causal and padding masks. With `rotary`, queries and keys
    are rotated by `positions` (self-attention only).

    Incremental decoding: pass `cache={"k": (B, S_max, K, H), "v": ..., "index": (B,)}` (index =
    positions already filled per sequence): this call's keys/values are written at index[b], and
    the returned cache holds them; `mask` must then cover the S_max cached positions. Writing past
    S_max cannot raise inside jit (the write is clamped to the end): callers keep index + T <= S_max. Without a
    cache, the returned "cache" is this call's own keys and values (T positions), for a prefill.
    """

    num_heads: int
    num_kv_heads: int | None = None  # None: = num_heads; fewer shares each key/value head (GQA)
    use_bias: bool = True
    rotary: bool = False
    dtype: Any = jnp.float32  # computation dtype; params stay float32
    implementation: str | None = None  # jax.nn.dot_product_attention's: None/"xla" or "cudnn"

    @nn.compact
    def __call__(self, x_BTD: jax.Array, context_BSD: jax.Array | None = None, mask: jax.Array | None = None,
                 positions_BT: jax.Array | None = None, cache: dict | None = None) -> tuple[jax.Array, dict]:
        D = x_BTD.shape[-1]
        N = self.num_heads
        K = self.num_kv_heads or N
        if D % N or N % K:
            raise ValueError(f"{N} heads must divide the width {D}, and {K} key/value heads must divide {N} heads")
        H = D // N
        if self.rotary and H % 2:
            raise ValueError(f"rotary positions need an even head width, got {D} / {N} heads = {H}")
        proj = lambda heads, name: nn.DenseGeneral((heads, H), use_bias=self.use_bias, dtype=self.dtype, name=name)
        source_BSD = x_BTD if context_BSD is None else context_BSD
        q_BTNH = proj(N, "query")(x_BTD)
        k_BSKH, v_BSKH = proj(K, "key")(source_BSD), proj(K, "value")(source_BSD)
        if self.rotary:
            if context_BSD is not None:
                raise ValueError("rotary positions are for self-attention; cross-attention has no shared positions")
            q_BTNH, k_BSKH = rope(q_BTNH, positions_BT), rope(k_BSKH, positions_BT)
        if cache is None:
            new_cache = {"k": k_BSKH, "v": v_BSKH}
        else:
            start_B = cache["index"]
            k_BSKH = write_cache(cache["k"], k_BSKH.astype(cache["k"].dtype), start_B)
            v_BSKH = write_cache(cache["v"], v_BSKH.astype(cache["v"].dtype), start_B)
            new_cache = {"k": k_BSKH, "v": v_BSKH, "index": start_B + x_BTD.shape[1]}
        y_BTNH = jax.nn.dot_product_attention(q_BTNH, k_BSKH.astype(q_BTNH.dtype), v_BSKH.astype(q_BTNH.dtype),
                                              mask=mask, implementation=self.implementation)
        out_BTD = nn.DenseGeneral(D, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype, name="out")(y_BTNH)
        return out_BTD, new_cache
