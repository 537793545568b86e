"""Transformers: pre-norm blocks, an `Encoder`, a `Decoder` (causal self-attention, optionally
cross-attention), the sequence-to-sequence `EncoderDecoder` and the GPT-style `DecoderLM`.

A block is x + Attention(Norm(x)) [+ CrossAttention(Norm(x), context)] + MLP(Norm(x)), each
branch followed by dropout; the MLP is Dense(4D) -> GELU -> Dense(D) (`gelu`: "exact", the erf
form, or "tanh", the approximation GPT-2 was trained with). The layers are one `nn.scan` over a
stack of blocks (params with a leading layer axis), so compile time does not grow with depth;
`unroll` blocks run per iteration of that loop (`unroll=num_layers`: straight-line code, the same
params; on XLA:CPU a 4-layer GPT's training step is ~15% faster, benchmarks/lm_vs_torch.py, and
compile time grows with depth); `remat` recomputes each block's activations in the backward pass
instead of storing them.
`dtype=jnp.bfloat16` computes in bf16 while params (and so the optimizer state) stay float32.

Decoders speak the language-model interface: `apply(params, tokens_BT, cache, lengths_B, train=)`
-> `(logits_BTV, cache)`. Without a cache the call is a prefill: causal attention over the T tokens,
returning a key/value cache of `max_len` positions with `index = lengths_B` (right-padded prompts:
each sequence continues from its own length). With a cache, the tokens go at positions
index[b], index[b] + 1, ... and attend to everything cached before them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.attention import POSITIONS, MultiHeadAttention, causal_mask, padding_mask, sinusoidal

NORMS = ("layer", "rms")
GELUS = ("exact", "tanh")  # erf GELU; the tanh approximation (GPT-2's "gelu_new")


class Block(nn.Module):
    """One pre-norm transformer layer. `__call__(x, cache_kv, ...) -> (x, new_kv)`: scan-shaped."""

    num_heads: int
    num_kv_heads: int | None = None
    mlp_ratio: int = 4
    dropout: float = 0.0
    norm: str = "layer"
    cross: bool = False  # add cross-attention to a context (the encoder's states)
    rotary: bool = False
    gelu: str = "exact"  # exact | tanh
    fast_variance: bool = True  # LayerNorm's variance in one pass (see Transformer)
    dtype: Any = jnp.float32
    implementation: str | None = None

    @nn.compact
    def __call__(self, x_BTD: jax.Array, kv: dict | None, mask: jax.Array | None, positions_BT: jax.Array,
                 index_B: jax.Array | None, context_BSD: jax.Array | None, context_mask: jax.Array | None,
                 train: bool) -> tuple[jax.Array, dict]:
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
        norm = lambda name: make_norm(self.norm, self.dtype, name, self.fast_variance)
        mha = lambda name, rotary: MultiHeadAttention(self.num_heads, self.num_kv_heads, rotary=rotary,
                                                      dtype=self.dtype, implementation=self.implementation, name=name)
        cache = None if kv is None else {**kv, "index": index_B}
        y_BTD, new_cache = mha("attention", self.rotary)(norm("attention_norm")(x_BTD), mask=mask,
                                                         positions_BT=positions_BT, cache=cache)
        x_BTD = x_BTD + drop(y_BTD)
        if self.cross:
            y_BTD, _ = mha("cross_attention", False)(norm("cross_norm")(x_BTD), context_BSD, mask=context_mask)
            x_BTD = x_BTD + drop(y_BTD)
        D = x_BTD.shape[-1]
        h = nn.Dense(self.mlp_ratio * D, dtype=self.dtype, name="mlp_in")(norm("mlp_norm")(x_BTD))
        h = nn.Dense(D, dtype=self.dtype, name="mlp_out")(jax.nn.gelu(h, approximate=self.gelu == "tanh"))
        return x_BTD + drop(h), {"k": new_cache["k"], "v": new_cache["v"]}


class Stack(nn.Module):
    """`num_layers` blocks; keys/values in and out carry a leading layer axis."""

    num_layers: int
    block: dict  # Block's fields
    scan: bool = True
    remat: bool = False
    unroll: int = 1  # blocks per iteration of the scan

    @nn.compact
    def __call__(self, x_BTD, kv, mask, positions_BT, index_B, context_BSD, context_mask, train):
        cls = nn.remat(Block, static_argnums=(8,)) if self.remat else Block  # `train` is static (self counts)
        if self.scan:
            layers = nn.scan(cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                             in_axes=(0,) + (nn.broadcast,) * 6, length=self.num_layers,
                             unroll=max(1, min(self.unroll, self.num_layers)))
            return layers(**self.block, name="layers")(x_BTD, kv, mask, positions_BT, index_B, context_BSD,
                                                       context_mask, train)
        kvs = []
        for i in range(self.num_layers):
            kv_i = None if kv is None else jax.tree.map(lambda a: a[i], kv)
            x_BTD, out = cls(**self.block, name=f"layers_{i}")(x_BTD, kv_i, mask, positions_BT, index_B,
                                                                context_BSD, context_mask, train)
            kvs.append(out)
        return x_BTD, jax.tree.map(lambda *a: jnp.stack(a), *kvs)


def unstack_layers(stack_params: dict, num_layers: int) -> dict:
    """A scanned Stack's params ({"layers": leading layer axis}) -> an unscanned one's ({"layers_i": ...})."""
    return {f"layers_{i}": jax.tree.map(lambda a: a[i], stack_params["layers"]) for i in range(num_layers)}


def make_norm(norm: str, dtype: Any, name: str | None = None, fast_variance: bool = True) -> nn.Module:
    if norm == "rms":
        return nn.RMSNorm(epsilon=1e-5, dtype=dtype, name=name)
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, use_fast_variance=fast_variance, name=name)


class Transformer(nn.Module):
    """What encoders and decoders share: token (and position) embeddings, the layer stack, the final norm."""

    vocab_size: int
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # fewer than num_heads: grouped-query attention
    max_len: int = 256  # the context: longest sequence (and key/value cache)
    mlp_ratio: int = 4
    dropout: float = 0.0
    pos: str = "learned"  # sinusoidal | learned | rope
    norm: str = "layer"  # layer | rms
    gelu: str = "exact"  # the MLP's GELU: exact (erf) | tanh (the approximation, as GPT-2)
    # LayerNorm's variance as E[x^2] - E[x]^2 (one pass, flax's default), or as E[(x - E[x])^2]
    # (two passes, torch's): the one-pass form loses digits when |mean| >> std, so converted models use False
    fast_variance: bool = True
    scan: bool = True  # one nn.scan over the layers (flat compile time); False: a Python loop
    unroll: int = 1  # layers per iteration of that scan (num_layers: none of the loop left, the same params)
    remat: bool = False  # recompute each block in the backward pass (less memory, more compute)
    dtype: Any = jnp.float32  # computation dtype (bf16 on GPU/TPU); params are float32
    implementation: str | None = None  # attention kernel: None/"xla" or "cudnn"

    def has_cross_attention(self) -> bool:
        return False

    def setup(self) -> None:
        check_config(self)
        init = nn.initializers.normal(0.02)
        self.token_embedding = nn.Embed(self.vocab_size, self.d_model, dtype=self.dtype, embedding_init=init)
        if self.pos == "learned":
            self.position_embedding = nn.Embed(self.max_len, self.d_model, dtype=self.dtype, embedding_init=init)
        block = dict(num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, mlp_ratio=self.mlp_ratio,
                     dropout=self.dropout, norm=self.norm, cross=self.has_cross_attention(),
                     rotary=self.pos == "rope", gelu=self.gelu, fast_variance=self.fast_variance, dtype=self.dtype,
                     implementation=self.implementation)
        self.stack = Stack(self.num_layers, block, self.scan, self.remat, self.unroll)
        self.final_norm = make_norm(self.norm, self.dtype, fast_variance=self.fast_variance)
        self.embedding_dropout = nn.Dropout(self.dropout)

    def embed(self, tokens_BT: jax.Array, positions_BT: jax.Array, train: bool) -> jax.Array:
        x_BTD = self.token_embedding(tokens_BT)
        if self.pos == "learned":
            x_BTD = x_BTD + self.position_embedding(positions_BT)
        elif self.pos == "sinusoidal":
            x_BTD = x_BTD + sinusoidal(self.max_len, self.d_model)[positions_BT].astype(x_BTD.dtype)
        return self.embedding_dropout(x_BTD, deterministic=not train)

    def check_length(self, T: int) -> None:
        if T > self.max_len:
            raise ValueError(f"{T} tokens exceed the context (max_len {self.max_len})")


def check_config(m: Transformer) -> None:
    """Raise ValueError for sizes and names the model cannot be built with."""
    if m.pos not in POSITIONS:
        raise ValueError(f"unknown positional encoding {m.pos!r}: use one of {', '.join(POSITIONS)}")
    if m.norm not in NORMS:
        raise ValueError(f"unknown norm {m.norm!r}: use one of {', '.join(NORMS)}")
    if m.gelu not in GELUS:
        raise ValueError(f"unknown gelu {m.gelu!r}: use one of {', '.join(GELUS)}")
    if m.d_model % m.num_heads:
        raise ValueError(f"{m.num_heads} heads do not divide the width d_model = {m.d_model}")
    if m.num_kv_heads and m.num_heads % m.num_kv_heads:
        raise ValueError(f"{m.num_kv_heads} key/value heads do not divide {m.num_heads} heads")
    if m.pos == "rope" and (m.d_model // m.num_heads) % 2:
        raise ValueError(f"rotary positions need an even head width, got {m.d_model // m.num_heads}")


class Encoder(Transformer):
    """Bidirectional self-attention over a right-padded token sequence -> its states (B, S, D)."""

    def __call__(self, tokens_BS: jax.Array, lengths_B: jax.Array | None = None, train: bool = False) -> jax.Array:
        B, S = tokens_BS.shape
        self.check_length(S)
        positions_BS = jnp.broadcast_to(jnp.arange(S), (B, S))
        mask = None if lengths_B is None else padding_mask(lengths_B, S)
        x_BSD, _ = self.stack(self.embed(tokens_BS, positions_BS, train), None, mask, positions_BS, None, None,
                              None, train)
        return self.final_norm(x_BSD)


class Decoder(Transformer):
    """Causal self-attention (plus cross-attention to a context with `cross`) -> next-token logits.

    `__call__(tokens_BT, cache=None, lengths_B=None, train=False, context_BSD=None, context_lengths_B=None)`
    -> (logits_BTV float32, cache); see the module docstring for the cache.
    """

    tie_embeddings: bool = False  # the output layer is the token embedding's transpose
    cross_attention: bool = False  # attend to a context (an encoder's states) in every block

    def has_cross_attention(self) -> bool:
        return self.cross_attention

    def setup(self) -> None:
        super().setup()
        if not self.tie_embeddings:
            self.head = nn.Dense(self.vocab_size, dtype=self.dtype)

    def __call__(self, tokens_BT: jax.Array, cache: dict | None = None, lengths_B: jax.Array | None = None,
                 train: bool = False, context_BSD: jax.Array | None = None,
                 context_lengths_B: jax.Array | None = None) -> tuple[jax.Array, dict]:
        B, T = tokens_BT.shape
        if cache is None:
            self.check_length(T)
            positions_BT = jnp.broadcast_to(jnp.arange(T), (B, T))
            mask = causal_mask(positions_BT, T)
        else:
            positions_BT = cache["index"][:, None] + jnp.arange(T)
            mask = causal_mask(positions_BT, cache["k"].shape[2])
        context_mask = None
        if context_BSD is not None and context_lengths_B is not None:
            context_mask = padding_mask(context_lengths_B, context_BSD.shape[1])
        kv = None if cache is None else {"k": cache["k"], "v": cache["v"]}
        x_BTD, kv = self.stack(self.embed(tokens_BT, positions_BT, train), kv, mask, positions_BT,
                               None if cache is None else cache["index"], context_BSD, context_mask, train)
        x_BTD = self.final_norm(x_BTD)
        logits_BTV = self.token_embedding.attend(x_BTD) if self.tie_embeddings else self.head(x_BTD)
        if cache is None:  # a prefill: room for max_len positions, each sequence continuing at its length
            pad = [(0, 0), (0, 0), (0, self.max_len - T), (0, 0), (0, 0)]
            new_cache = {"k": jnp.pad(kv["k"], pad), "v": jnp.pad(kv["v"], pad),
                         "index": jnp.full((B,), T, jnp.int32) if lengths_B is None else lengths_B.astype(jnp.int32)}
        else:
            new_cache = {**kv, "index": cache["index"] + T}
        return logits_BTV.astype(jnp.float32), new_cache


class DecoderLM(Decoder):
    """A GPT-style decoder-only language model (no cross-attention)."""


class EncoderDecoder(nn.Module):
    """Sequence to sequence: an `Encoder` over the source, a cross-attending `Decoder` over the target.

    `__call__(source_BS, source_lengths_B, target_BT, train)` -> logits (teacher forcing);
    `encode` and `decode` (via `apply(..., method=...)`) for generation with a cache.
    """

    vocab_size: int
    d_model: int = 128
    encoder_layers: int = 3
    decoder_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int | None = None
    max_len: int = 64
    mlp_ratio: int = 4
    dropout: float = 0.0
    pos: str = "sinusoidal"
    norm: str = "layer"
    gelu: str = "exact"
    fast_variance: bool = True
    tie_embeddings: bool = False
    scan: bool = True
    unroll: int = 1
    remat: bool = False
    dtype: Any = jnp.float32
    implementation: str | None = None

    def setup(self) -> None:
        shared = dict(vocab_size=self.vocab_size, d_model=self.d_model, num_heads=self.num_heads,
                      num_kv_heads=self.num_kv_heads, max_len=self.max_len, mlp_ratio=self.mlp_ratio,
                      dropout=self.dropout, pos=self.pos, norm=self.norm, gelu=self.gelu,
                      fast_variance=self.fast_variance, scan=self.scan, unroll=self.unroll, remat=self.remat,
                      dtype=self.dtype,
                      implementation=self.implementation)
        self.encoder = Encoder(num_layers=self.encoder_layers, **shared)
        self.decoder = Decoder(num_layers=self.decoder_layers, cross_attention=True,
                               tie_embeddings=self.tie_embeddings, **shared)

    def encode(self, source_BS: jax.Array, source_lengths_B: jax.Array, train: bool = False) -> jax.Array:
        return self.encoder(source_BS, source_lengths_B, train)

    def decode(self, target_BT: jax.Array, context_BSD: jax.Array, source_lengths_B: jax.Array,
               cache: dict | None = None, lengths_B: jax.Array | None = None,
               train: bool = False) -> tuple[jax.Array, dict]:
        return self.decoder(target_BT, cache, lengths_B, train, context_BSD, source_lengths_B)

    def __call__(self, source_BS: jax.Array, source_lengths_B: jax.Array, target_BT: jax.Array,
                 train: bool = False) -> jax.Array:
        context_BSD = self.encode(source_BS, source_lengths_B, train)
        return self.decode(target_BT, context_BSD, source_lengths_B, train=train)[0]


def training_flops_per_token(params: Any, num_layers: int, seq_len: int, d_model: int) -> float:
    """Model FLOPs to train on one token (forward + backward), as in PaLM (Chowdhery et al. 2022,
    appendix B): 6 N + 12 L T D, N the parameters used in matmuls (every weight matrix, the output
    layer included; embedding lookups are not matmuls, unless the output layer is the tied
    embedding), the second term the attention scores and weighted values over T positions."""
    p = params.get("params", params)
    n = sum(leaf.size for path, leaf in jax.tree_util.tree_flatten_with_path(p)[0]
            if getattr(path[-1], "key", "") == "kernel")
    if "head" not in p:  # tied: the token embedding is the output layer
        n += p["token_embedding"]["embedding"].size
    return 6.0 * n + 12.0 * num_layers * seq_len * d_model
