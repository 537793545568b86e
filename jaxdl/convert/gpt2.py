"""Hugging Face GPT-2 (GPT2LMHeadModel / GPT2Model) <-> jaxdl's DecoderLM, any size gpt2 .. gpt2-xl.

GPT-2 is a pre-norm decoder with learned positions, LayerNorm (eps 1e-5), biases everywhere, the
tanh GELU and an output layer tied to the token embedding: a DecoderLM with pos="learned",
norm="layer", gelu="tanh", tie_embeddings=True. Its `Conv1D` weights are already (in, out), like
Flax kernels. Per layer i (names after the optional `transformer.` prefix):
    h.i.ln_1 / ln_2                attention_norm / mlp_norm (weight -> scale, bias)
    h.i.attn.c_attn (D, 3D)        query | key | value, each (D, D) -> (D, N, H) (head n = columns nH..nH+H)
    h.i.attn.c_proj (D, D)         out (N, H, D)
    h.i.mlp.c_fc / c_proj          mlp_in / mlp_out
and wte, wpe, ln_f -> token_embedding, position_embedding, final_norm; layers stack on a leading
axis (nn.scan's layout). Older files' causal-mask buffers (h.i.attn.bias, .masked_bias) are skipped.
A tokenizer.json beside the weights travels with the run (jaxdl.data.pretrained_tokenizers);
without one, prompts and outputs are token ids.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from typing import Any, Callable, Mapping

import numpy as np

from jaxdl.convert import state_dict
from jaxdl.convert.workdir import Converted
from jaxdl.errors import UsageError

PREFIX = "transformer."
CONFIG_COPY = "config.hf.json"  # the source config.json, kept so an export gives back its token ids and extras
GELUS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "exact"}
DEFAULTS = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}  # GPT2Config's
# config values that change what GPT-2 computes, and the one jaxdl computes (missing = GPT2Config's default);
# reorder_and_upcast_attn is not among them: it changes only half-precision rounding, and jaxdl computes in float32
REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}
# Block params stored as GPT-2 stores them: (ours, theirs, our name for their .weight)
SAME_LAYOUT = (("attention_norm", "ln_1", "scale"), ("mlp_norm", "ln_2", "scale"), ("mlp_in", "mlp.c_fc", "kernel"),
               ("mlp_out", "mlp.c_proj", "kernel"))
BUFFER = re.compile(r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")


def read_config(src: str) -> tuple[dict[str, Any], str]:
    """(config.json as a dict, the directory holding it): `src` is that directory or a weights file in it."""
    folder = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist: a GPT-2 conversion needs the model's config.json beside the "
                         "weights (save_pretrained writes it)") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} cannot be read as JSON ({type(e).__name__})") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path} holds no JSON object: not a Hugging Face config")
    return config, folder


def model_of(config: Mapping[str, Any], path: str):
    """The DecoderLM a GPT2Config describes; a UsageError naming the first field jaxdl cannot follow."""
    from jaxdl.models.transformer import DecoderLM

    refuse = lambda what: UsageError(f"{path}: {what}, which jaxdl's DecoderLM does not support")
    if config.get("model_type") != "gpt2":
        raise UsageError(f"{path} has model_type {config.get('model_type')!r}: --from gpt2 converts GPT-2 (gpt2)")
    for key, value in REQUIRED.items():
        if config.get(key, value) != value:
            raise refuse(f"{key} is {json.dumps(config[key])}")
    size = {k: config.get(k, default) for k, default in DEFAULTS.items()}
    bad = [k for k, v in size.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        raise UsageError(f"{path}: {bad[0]} must be a positive integer, got {size[bad[0]]!r}")
    D, heads = size["n_embd"], size["n_head"]
    eps = config.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or not math.isclose(eps, 1e-5, rel_tol=1e-6):
        raise refuse(f"layer_norm_epsilon is {eps!r} (jaxdl's LayerNorm uses 1e-5)")
    inner = config.get("n_inner") or 4 * D
    if not isinstance(inner, int) or inner % D:
        raise refuse(f"n_inner is {inner!r}, not a multiple of n_embd {D}")
    activation = config.get("activation_function", "gelu_new")
    if activation not in GELUS:
        raise refuse(f"activation_function is {activation!r} (jaxdl has {', '.join(GELUS)})")
    if D % heads:
        raise UsageError(f"{path}: n_head {heads} does not divide n_embd {D}")
    return DecoderLM(size["vocab_size"], d_model=D, num_layers=size["n_layer"], num_heads=heads,
                     max_len=size["n_positions"], mlp_ratio=inner // D, dropout=0.0, pos="learned", norm="layer",
                     gelu=GELUS[activation], tie_embeddings=bool(config.get("tie_word_embeddings", True)),
                     fast_variance=False)  # torch's two-pass LayerNorm variance: parity also where |mean| >> std


def expected_shapes(model, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """GPT-2's state dict names (each after `prefix`) and shapes for `model`, lm_head excluded."""
    D, I = model.d_model, model.mlp_ratio * model.d_model
    shapes = {"wte.weight": (model.vocab_size, D), "wpe.weight": (model.max_len, D), "ln_f.weight": (D,),
              "ln_f.bias": (D,)}
    for i in range(model.num_layers):
        layer = {"ln_1.weight": (D,), "ln_1.bias": (D,), "attn.c_attn.weight": (D, 3 * D), "attn.c_attn.bias": (3 * D,),
                 "attn.c_proj.weight": (D, D), "attn.c_proj.bias": (D,), "ln_2.weight": (D,), "ln_2.bias": (D,),
                 "mlp.c_fc.weight": (D, I), "mlp.c_fc.bias": (I,), "mlp.c_proj.weight": (I, D), "mlp.c_proj.bias": (D,)}
        shapes.update({f"h.{i}.{k}": v for k, v in layer.items()})
    return {prefix + k: v for k, v in shapes.items()}


def block_from_gpt2(get: Callable[[str], np.ndarray], N: int) -> dict[str, Any]:
    """One jaxdl Block's params from one GPT-2 layer's tensors (`get("ln_1.weight")`, ...)."""
    D = get("ln_1.weight").shape[0]
    w_D3NH = get("attn.c_attn.weight").reshape(D, 3, N, D // N)  # columns: q | k | v, each head by head
    b_3NH = get("attn.c_attn.bias").reshape(3, N, D // N)
    attention = {name: {"kernel": w_D3NH[:, j], "bias": b_3NH[j]} for j, name in enumerate(("query", "key", "value"))}
    attention["out"] = {"kernel": get("attn.c_proj.weight").reshape(N, D // N, D), "bias": get("attn.c_proj.bias")}
    return {"attention": attention, **{ours: {weight: get(f"{theirs}.weight"), "bias": get(f"{theirs}.bias")}
                                       for ours, theirs, weight in SAME_LAYOUT}}


def block_to_gpt2(block: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One GPT-2 layer's tensors (names after `h.i.`) from one jaxdl Block's params."""
    a = lambda x: np.asarray(x, np.float32)
    att = block["attention"]
    D = a(att["query"]["kernel"]).shape[0]
    qkv = [att[name] for name in ("query", "key", "value")]
    out = {"attn.c_attn.weight": np.concatenate([a(p["kernel"]).reshape(D, D) for p in qkv], axis=1),
           "attn.c_attn.bias": np.concatenate([a(p["bias"]).reshape(D) for p in qkv]),
           "attn.c_proj.weight": a(att["out"]["kernel"]).reshape(D, D), "attn.c_proj.bias": a(att["out"]["bias"])}
    for ours, theirs, weight in SAME_LAYOUT:
        out.update({f"{theirs}.weight": a(block[ours][weight]), f"{theirs}.bias": a(block[ours]["bias"])})
    return out


def params_from_state_dict(t: Mapping[str, np.ndarray], model, prefix: str = "") -> dict[str, Any]:
    """DecoderLM params ({"params": ...}, float32 numpy, layers stacked as nn.scan lays them out)."""
    get = lambda name: np.ascontiguousarray(t[prefix + name], np.float32)
    import jax

    blocks = [block_from_gpt2(lambda name, i=i: get(f"h.{i}.{name}"), model.num_heads) for i in range(model.num_layers)]
    stacked = jax.tree.map(lambda *layers: np.stack(layers), *blocks)
    p = {"token_embedding": {"embedding": get("wte.weight")}, "position_embedding": {"embedding": get("wpe.weight")},
         "stack": {"layers": stacked}, "final_norm": {"scale": get("ln_f.weight"), "bias": get("ln_f.bias")}}
    if not model.tie_embeddings:  # GPT-2's separate lm_head has no bias
        p["head"] = {"kernel": np.ascontiguousarray(t["lm_head.weight"].T, np.float32),
                     "bias": np.zeros(model.vocab_size, np.float32)}
    return {"params": p}


def _untie_if_different(tensors: Mapping[str, np.ndarray], model, prefix: str):
    """The model the weights make: config.json may tie the head to wte while the file holds a
    different lm_head.weight; transformers then keeps them apart, and so does jaxdl (same logits)."""
    head = tensors.get("lm_head.weight")
    if model.tie_embeddings and head is not None and not np.array_equal(head, tensors[f"{prefix}wte.weight"]):
        return model.clone(tie_embeddings=False)
    return model


def convert_in(kind: str, src: str, meta: Mapping[str, Any]) -> Converted:
    """A GPT-2 directory (or weights file with config.json beside it) -> a language-model workdir."""
    from jaxdl.tasks.run_info import language_model_info

    config, folder = read_config(src)
    model = model_of(config, os.path.join(folder, "config.json"))
    tensors = {k: v for k, v in state_dict.read(src).items() if not BUFFER.search(k)}
    prefix = PREFIX if any(k.startswith(PREFIX) for k in tensors) else ""
    expected = expected_shapes(model, prefix)
    if "lm_head.weight" in tensors or not model.tie_embeddings:
        expected["lm_head.weight"] = (model.vocab_size, model.d_model)
    state_dict.check(tensors, expected, src, "GPT-2 (config.json's sizes)")
    model = _untie_if_different(tensors, model, prefix)
    params = params_from_state_dict(tensors, model, prefix)
    tokenizer, prompt, files = _tokenizer(folder, model.vocab_size, config.get("bos_token_id"))
    info = language_model_info(model, params, tokenizer, f"converted:{os.path.basename(os.path.abspath(src))}", prompt)
    return Converted(info, params, files)


def _tokenizer(folder: str, V: int, bos: Any) -> tuple[dict[str, Any], str, dict[str, bytes]]:
    """(model.json's tokenizer entry, the default prompt: the start token, files for the workdir): the
    folder's tokenizer.json when it has one, else token ids. config.json goes too (see CONFIG_COPY)."""
    from jaxdl.data.pretrained_tokenizers import HF_FILE, read_hf_tokenizer

    bos = bos if isinstance(bos, int) and 0 <= bos < V else 0
    path = lambda name: os.path.join(folder, name)
    files = {CONFIG_COPY: _bytes(path("config.json"))}
    if not os.path.isfile(path("tokenizer.json")):
        return {"kind": "ids", "vocab_size": V}, str(bos), files
    prompt = read_hf_tokenizer(path("tokenizer.json")).decode([bos], skip_special_tokens=False)
    files[HF_FILE] = _bytes(path("tokenizer.json"))
    return {"kind": "huggingface", "file": HF_FILE, "vocab_size": V}, prompt, files


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def unsupported(model) -> str | None:
    """What of a DecoderLM GPT-2 cannot express, or None."""
    problems = [(model.pos != "learned", f"pos={model.pos!r} (GPT-2 has learned positions)"),
                (model.norm != "layer", f"norm={model.norm!r} (GPT-2 has LayerNorm)"),
                (model.num_kv_heads not in (None, model.num_heads),
                 f"num_kv_heads={model.num_kv_heads} (GPT-2 has no grouped-query attention)"),
                (getattr(model, "cross_attention", False), "cross_attention (GPT2LMHeadModel has none)")]
    return next((why for bad, why in problems if bad), None)


def state_dict_from_params(params: Mapping[str, Any], model) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel's state dict (float32 numpy) of DecoderLM params, lm_head only when untied."""
    import jax

    p = params.get("params", params)
    a = lambda x: np.asarray(x, np.float32)
    stack = jax.tree.map(a, p["stack"])  # once: indexing a device array per layer would copy it all each time
    blocks = ([jax.tree.map(lambda x, i=i: x[i], stack["layers"]) for i in range(model.num_layers)]
              if "layers" in stack else [stack[f"layers_{i}"] for i in range(model.num_layers)])
    out = {"wte.weight": a(p["token_embedding"]["embedding"]), "wpe.weight": a(p["position_embedding"]["embedding"]),
           "ln_f.weight": a(p["final_norm"]["scale"]), "ln_f.bias": a(p["final_norm"]["bias"])}
    for i, block in enumerate(blocks):
        out.update({f"h.{i}.{k}": v for k, v in block_to_gpt2(block).items()})
    out = {PREFIX + k: v for k, v in out.items()}
    if not model.tie_embeddings:
        out["lm_head.weight"] = a(p["head"]["kernel"]).T
    return out


def gpt2_config(model, base: Mapping[str, Any]) -> dict[str, Any]:
    """config.json for GPT2LMHeadModel: the model's architecture over `base` (a converted run's source
    config, whose token ids and dropout come back; {} for a jaxdl run: no start/end tokens)."""
    D = model.d_model
    return {"resid_pdrop": model.dropout, "embd_pdrop": model.dropout, "attn_pdrop": 0.0, "bos_token_id": None,
            "eos_token_id": None, **base, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": model.vocab_size, "n_positions": model.max_len, "n_embd": D, "n_layer": model.num_layers,
            "n_head": model.num_heads, "n_inner": None if model.mlp_ratio == 4 else model.mlp_ratio * D,
            "activation_function": "gelu_new" if model.gelu == "tanh" else "gelu", "layer_norm_epsilon": 1e-5,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
            "tie_word_embeddings": bool(model.tie_embeddings)}


def export_directory(trained, out: str) -> list[str]:
    """A new directory `out` that GPT2LMHeadModel.from_pretrained opens: config.json, model.safetensors
    and, for a run with a Hugging Face tokenizer, tokenizer.json. Returns the files written."""
    from jaxdl.convert.workdir import new_directory

    model, workdir = trained.model, trained.workdir
    why = unsupported(model)
    if why:
        raise UsageError(f"{workdir} has {why}: GPT-2 cannot express it, so --to torch cannot export this run")
    p = trained.params.get("params", trained.params)
    if not model.tie_embeddings and np.any(np.asarray(p["head"]["bias"]) != 0):
        raise UsageError(f"{workdir} has an output layer with a bias (untied embeddings, a nonzero head bias): "
                         "GPT-2's lm_head has none, so the export would compute other logits")
    copy = os.path.join(workdir, CONFIG_COPY)
    base = json.loads(_bytes(copy)) if os.path.isfile(copy) else {}
    tokenizer = trained.info.get("tokenizer", {})
    names = ["config.json", "model.safetensors"]
    with new_directory(out) as partial:
        with open(os.path.join(partial, "config.json"), "w") as f:
            json.dump(gpt2_config(model, base), f, indent=2)
            f.write("\n")
        state_dict.write(state_dict_from_params(trained.params, model), os.path.join(partial, "model.safetensors"),
                         {"format": "pt"})
        if tokenizer.get("kind") == "huggingface":
            shutil.copyfile(os.path.join(workdir, tokenizer["file"]), os.path.join(partial, "tokenizer.json"))
            names.append("tokenizer.json")
    return [os.path.join(out, name) for name in names]
