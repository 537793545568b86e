"""A PyTorch reference for jaxdl's `DecoderLM`, for parity tests and benchmarks only.

torch is never a runtime dependency of jaxdl: this module is imported by `benchmarks/` scripts and
by tests that `pytest.importorskip("torch")` first.

`TorchGPT` is the GPT that `DecoderLM(pos="learned", norm="layer", tie_embeddings=False, dropout=0)`
computes, written the way a PyTorch user would (nanoGPT's shape): token + learned position
embeddings, `num_layers` pre-norm blocks x + attn(LN(x)), x + MLP(LN(x)) with LayerNorm eps 1e-5,
the MLP Linear(D, 4D) -> GELU (exact, erf) -> Linear(4D, D), attention with one fused query/key/value
Linear(D, 3D) (the same products as jaxdl's three projections), `F.scaled_dot_product_attention(
is_causal=True)` (softmax(QK^T / sqrt(H)) V) and an output Linear(D, D), then a final LayerNorm and
an untied Linear head.

`gpt_params_to_torch(params, module)` copies a DecoderLM's Flax params into it, scanned (the
default: `params["stack"]["layers"]`, every leaf with a leading layer axis) or not
(`params["stack"]["layers_i"]`); `gpt_state_dict` is the mapping itself, and maps any pytree shaped
like the params (gradients too) to torch's names and layouts. Use `lm_loss` / `lm_evaluate` from
benchmarks/torch_lm.py for the loss and the validation pass: they take any tokens -> logits module.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.torch_lm import load_checked


class TorchBlock(nn.Module):
    """One pre-norm layer: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"{num_heads} heads do not divide the width d_model = {d_model}")
        self.num_heads = num_heads
        self.attention_norm = nn.LayerNorm(d_model, eps=1e-5)
        self.qkv = nn.Linear(d_model, 3 * d_model)  # rows: queries, keys, values; head n = rows n*H..(n+1)*H
        self.out = nn.Linear(d_model, d_model)
        self.mlp_norm = nn.LayerNorm(d_model, eps=1e-5)
        self.mlp_in = nn.Linear(d_model, mlp_ratio * d_model)
        self.mlp_out = nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        N = self.num_heads
        q, k, v = self.qkv(self.attention_norm(x_BTD)).view(B, T, 3, N, D // N).permute(2, 0, 3, 1, 4)  # 3 x (B, N, T, H)
        y_BNTH = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x_BTD = x_BTD + self.out(y_BNTH.transpose(1, 2).reshape(B, T, D))
        return x_BTD + self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x_BTD)), approximate="none"))


class TorchGPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab); T <= max_len."""

    def __init__(self, vocab_size: int, d_model: int = 128, num_layers: int = 4, num_heads: int = 4,
                 max_len: int = 256, mlp_ratio: int = 4):
        super().__init__()
        self.num_layers, self.max_len = num_layers, max_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(TorchBlock(d_model, num_heads, mlp_ratio) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model, eps=1e-5)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens_BT: torch.Tensor) -> torch.Tensor:
        T = tokens_BT.shape[1]
        if T > self.max_len:
            raise ValueError(f"{T} tokens exceed the context (max_len {self.max_len})")
        x_BTD = self.token_embedding(tokens_BT) + self.position_embedding(torch.arange(T, device=tokens_BT.device))
        for block in self.blocks:
            x_BTD = block(x_BTD)
        return self.head(self.final_norm(x_BTD))


def _layers(stack: Mapping[str, Any], num_layers: int) -> list[Mapping[str, Any]]:
    """Per-layer param dicts from a scanned ("layers", leading layer axis) or unscanned ("layers_i") stack."""
    if "layers" in stack:
        return [jax.tree.map(lambda a: np.asarray(a)[i], stack["layers"]) for i in range(num_layers)]
    return [stack[f"layers_{i}"] for i in range(num_layers)]


def gpt_state_dict(params: Mapping[str, Any], num_layers: int) -> dict[str, np.ndarray]:
    """A DecoderLM's params (or anything shaped like them, e.g. gradients) -> TorchGPT's state_dict
    names and layouts, as float32 numpy arrays."""
    p = params.get("params", params)
    if "position_embedding" not in p or "head" not in p or "scale" not in p["final_norm"] or "bias" not in p["final_norm"]:
        raise ValueError("TorchGPT mirrors DecoderLM(pos='learned', norm='layer', tie_embeddings=False) only")
    f32 = lambda x: np.asarray(x, np.float32)
    linear = lambda kernel_DO: f32(kernel_DO).T  # Dense (in, out) -> Linear (out, in)
    state = {"token_embedding.weight": f32(p["token_embedding"]["embedding"]),
             "position_embedding.weight": f32(p["position_embedding"]["embedding"]),
             "final_norm.weight": f32(p["final_norm"]["scale"]), "final_norm.bias": f32(p["final_norm"]["bias"]),
             "head.weight": linear(p["head"]["kernel"]), "head.bias": f32(p["head"]["bias"])}
    for i, layer in enumerate(_layers(p["stack"], num_layers)):
        a = layer["attention"]
        D = np.shape(a["query"]["kernel"])[0]
        if np.shape(a["key"]["kernel"]) != np.shape(a["query"]["kernel"]):
            raise ValueError("TorchGPT has as many key/value heads as query heads (no grouped-query attention)")
        # DenseGeneral kernels: query/key/value (D, N, H), out (N, H, D); Linear wants (out, in), head-major
        qkv = [f32(a[n]["kernel"]).reshape(D, D).T for n in ("query", "key", "value")]
        state.update({
            f"blocks.{i}.attention_norm.weight": f32(layer["attention_norm"]["scale"]),
            f"blocks.{i}.attention_norm.bias": f32(layer["attention_norm"]["bias"]),
            f"blocks.{i}.qkv.weight": np.concatenate(qkv, axis=0),
            f"blocks.{i}.qkv.bias": np.concatenate([f32(a[n]["bias"]).reshape(D) for n in ("query", "key", "value")]),
            f"blocks.{i}.out.weight": f32(a["out"]["kernel"]).reshape(D, D).T,
            f"blocks.{i}.out.bias": f32(a["out"]["bias"]),
            f"blocks.{i}.mlp_norm.weight": f32(layer["mlp_norm"]["scale"]),
            f"blocks.{i}.mlp_norm.bias": f32(layer["mlp_norm"]["bias"]),
            f"blocks.{i}.mlp_in.weight": linear(layer["mlp_in"]["kernel"]),
            f"blocks.{i}.mlp_in.bias": f32(layer["mlp_in"]["bias"]),
            f"blocks.{i}.mlp_out.weight": linear(layer["mlp_out"]["kernel"]),
            f"blocks.{i}.mlp_out.bias": f32(layer["mlp_out"]["bias"]),
        })
    return state


def gpt_params_to_torch(params: Mapping[str, Any], module: TorchGPT) -> TorchGPT:
    """Load a DecoderLM's Flax params (same sizes; dropout aside) into `module` in place; returns it."""
    state = {k: torch.tensor(v) for k, v in gpt_state_dict(params, module.num_layers).items()}  # copies
    return load_checked(module, state)
