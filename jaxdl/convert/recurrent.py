"""torch.nn.RNN / LSTM / GRU <-> jaxdl's `Recurrent`, and the character language model made of
nn.Embedding + one of them + nn.Linear <-> `RecurrentLM`.

The sizes (hidden width, layers, directions) are read off the state dict's names and shapes; the
cell is given (a state dict cannot tell an nn.RNN from a one-gate cell of another kind, and a GRU's
and an LSTM's shapes differ only in the gate count, which is checked). jaxdl's RNN cell is tanh:
an `nn.RNN(nonlinearity="relu")` cannot be told apart and would compute something else.

In a language model's state dict, the recurrent module is the one holding `weight_ih_l0`, the
embedding the (vocab, input) matrix without a bias, the output layer the (vocab, hidden) one with
one; their names are free (`embedding`, `rnn`, `head` when jaxdl writes them).
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from jaxdl.convert import state_dict
from jaxdl.convert.workdir import Converted
from jaxdl.errors import UsageError

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_PARAM = re.compile(r"^(?P<prefix>.*?)(?P<kind>weight|bias)_(?P<io>ih|hh)_l(?P<layer>\d+)(?P<reverse>_reverse)?$")


def _layer_names(layers: int, bidirectional: bool) -> list[tuple[str, str]]:
    """(flax submodule name, torch suffix) for each layer and direction, in PyTorch's order."""
    return [(f"layer{l}" + ("_reverse" if d else ""), f"l{l}" + ("_reverse" if d else ""))
            for l in range(layers) for d in range(2 if bidirectional else 1)]


def params_from_torch(state_dict: Mapping[str, Any], layers: int, bidirectional: bool = False) -> dict:
    """A `torch.nn.RNN/LSTM/GRU` state dict (tensors or arrays) -> params of `Recurrent`.

    Torch keeps `weight_ih_l{k}` as (gates * hidden, in); ours is its transpose, so `x @ w`.
    """
    arr = lambda v: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32)
    out = {}
    for ours, theirs in _layer_names(layers, bidirectional):
        out[ours] = {"w_ih": arr(state_dict[f"weight_ih_{theirs}"]).T, "w_hh": arr(state_dict[f"weight_hh_{theirs}"]).T,
                     "b_ih": arr(state_dict[f"bias_ih_{theirs}"]), "b_hh": arr(state_dict[f"bias_hh_{theirs}"])}
    return {"params": out}


def params_to_torch(params: Mapping[str, Any], layers: int, bidirectional: bool = False) -> dict[str, np.ndarray]:
    """Params of `Recurrent` -> a state dict of numpy arrays for `torch.nn.RNN/LSTM/GRU`
    (`module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})`)."""
    p = params.get("params", params)
    out = {}
    for ours, theirs in _layer_names(layers, bidirectional):
        q = {k: np.asarray(v) for k, v in p[ours].items()}
        out[f"weight_ih_{theirs}"] = np.ascontiguousarray(np.asarray(q["w_ih"]).T)
        out[f"weight_hh_{theirs}"] = np.ascontiguousarray(np.asarray(q["w_hh"]).T)
        out[f"bias_ih_{theirs}"] = np.array(q["b_ih"])  # copies: writable, as torch.from_numpy wants
        out[f"bias_hh_{theirs}"] = np.array(q["b_hh"])
    return out


def recurrent_shapes(cell: str, inputs: int, hidden: int, layers: int, bidirectional: bool,
                     prefix: str = "") -> dict[str, tuple]:
    """The state dict names and shapes of `torch.nn.{RNN,LSTM,GRU}(inputs, hidden, layers, bidirectional=...)`."""
    G, out = GATES[cell] * hidden, {}
    directions = 2 if bidirectional else 1
    for layer in range(layers):
        width = inputs if layer == 0 else hidden * directions
        for suffix in ("", "_reverse")[:directions]:
            out.update({f"{prefix}weight_ih_l{layer}{suffix}": (G, width), f"{prefix}weight_hh_l{layer}{suffix}": (G, hidden),
                        f"{prefix}bias_ih_l{layer}{suffix}": (G,), f"{prefix}bias_hh_l{layer}{suffix}": (G,)})
    return out


def _sizes(tensors: Mapping[str, np.ndarray], cell: str, prefix: str, src: str) -> tuple[int, int, int, bool]:
    """(inputs, hidden, layers, bidirectional) of the recurrent module under `prefix`."""
    ih, hh = tensors.get(f"{prefix}weight_ih_l0"), tensors.get(f"{prefix}weight_hh_l0")
    if ih is None or hh is None or ih.ndim != 2 or hh.ndim != 2:
        raise UsageError(f"{src} has no torch.nn.RNN/LSTM/GRU weights ({prefix}weight_ih_l0, {prefix}weight_hh_l0)")
    hidden = hh.shape[1]
    if hh.shape[0] != GATES[cell] * hidden:
        found = {g * hidden: name for name, g in GATES.items()}.get(hh.shape[0], f"{hh.shape[0] // max(hidden, 1)}-gate")
        raise UsageError(f"{src}: {prefix}weight_hh_l0 is {tuple(hh.shape)}, the shape of an nn.{found.upper()} of "
                         f"hidden size {hidden}, not an nn.{cell.upper()}: give the cell it was built with")
    layers = 1 + max(int(m["layer"]) for k in tensors if (m := _PARAM.match(k)) and m["prefix"] == prefix)
    bidirectional = f"{prefix}weight_ih_l0_reverse" in tensors
    return ih.shape[1], hidden, layers, bidirectional


def module_from_torch(tensors: Mapping[str, Any], cell: str, src: str = "the state dict") -> tuple[Any, dict]:
    """A `torch.nn.{RNN,LSTM,GRU}(batch_first=True)` state dict (tensors or arrays) -> (`Recurrent`
    module, its params): the same outputs and final states for the same inputs."""
    from jaxdl.models.recurrent import Recurrent

    if cell not in GATES:
        raise UsageError(f"unknown cell {cell!r}: use one of {', '.join(GATES)}")
    arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32)
              for k, v in tensors.items()}
    inputs, hidden, layers, bidirectional = _sizes(arrays, cell, "", src)
    state_dict.check(arrays, recurrent_shapes(cell, inputs, hidden, layers, bidirectional), src, f"nn.{cell.upper()}")
    return Recurrent(cell, hidden, layers, bidirectional), params_from_torch(arrays, layers, bidirectional)


def module_to_torch(module: Any, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A `Recurrent` module's params -> the state dict of the equivalent torch.nn.{RNN,LSTM,GRU}."""
    return params_to_torch(params, module.layers, module.bidirectional)


def _lm_parts(tensors: Mapping[str, np.ndarray], src: str) -> tuple[str, str, str]:
    """(embedding name, recurrent prefix, head name) of a character LM's state dict."""
    prefixes = {m["prefix"] for k in tensors if (m := _PARAM.match(k))}
    if len(prefixes) != 1:
        raise UsageError(f"{src}: a language model has one recurrent module (names ending weight_ih_l0); found "
                         f"{len(prefixes)}{': ' + ', '.join(sorted(p.rstrip('.') or '(top level)' for p in prefixes)) if prefixes else ''}")
    prefix = prefixes.pop()
    rest = [k[:-len(".weight")] for k, v in tensors.items()
            if k.endswith(".weight") and not _PARAM.match(k) and v.ndim == 2]
    embeddings = [k for k in rest if f"{k}.bias" not in tensors]
    heads = [k for k in rest if f"{k}.bias" in tensors]
    if len(embeddings) != 1 or len(heads) != 1:
        raise UsageError(f"{src}: a character LM is nn.Embedding + the recurrent module + nn.Linear; found "
                         f"{len(embeddings)} embedding-like ({', '.join(embeddings) or 'none'}) and {len(heads)} "
                         f"linear layers ({', '.join(heads) or 'none'})")
    return embeddings[0], prefix, heads[0]


def _tokenizer(meta: Mapping[str, Any], vocab: int, src: str) -> tuple[dict, np.ndarray | None]:
    """(model.json's tokenizer, the row order that puts the model's vocabulary in jaxdl's order or None).

    `chars`: the model's characters in its own id order (torch id i is chars[i]); jaxdl keeps a
    character vocabulary in code-point order, so rows are permuted. Without it, prompts are ids."""
    chars = meta.get("chars")
    tokenizer = meta.get("tokenizer")
    if chars is None and isinstance(tokenizer, dict) and tokenizer.get("kind") == "char":
        chars = tokenizer.get("chars")
    if isinstance(tokenizer, dict) and tokenizer.get("kind") == "byte":
        if vocab != 256:
            raise UsageError(f"{src}: a byte tokenizer has 256 ids, the model {vocab}")
        return {"kind": "byte"}, None
    if chars is None:
        return {"kind": "ids", "vocab_size": vocab}, None
    if not isinstance(chars, str) or len(chars) != vocab or len(set(chars)) != vocab:
        raise UsageError(f"{src}: the vocabulary must be {vocab} distinct characters (the embedding's rows), got "
                         f"{len(chars) if isinstance(chars, str) else type(chars).__name__}"
                         f"{'' if not isinstance(chars, str) or len(set(chars)) == len(chars) else ' with repeats'}")
    order = np.argsort([ord(c) for c in chars], kind="stable")
    return {"kind": "char", "chars": "".join(sorted(chars))}, order


def convert_in(kind: str, src: str, given: Mapping[str, Any]) -> Converted:
    """A character LM's state dict -> the workdir contents of a jaxdl language model (RecurrentLM)."""
    from jaxdl.models.recurrent import RecurrentLM
    from jaxdl.tasks.run_info import language_model_info

    cell = kind.removesuffix("-lm")
    tensors = state_dict.read(src)
    embedding, prefix, head = _lm_parts(tensors, src)
    inputs, hidden, layers, bidirectional = _sizes(tensors, cell, prefix, src)
    if bidirectional:
        raise UsageError(f"{src}: a bidirectional recurrent module cannot generate text (it reads the future); "
                         "convert it with jaxdl.convert.recurrent.module_from_torch instead")
    vocab = tensors[f"{embedding}.weight"].shape[0]
    expected = {f"{embedding}.weight": (vocab, inputs), f"{head}.weight": (vocab, hidden), f"{head}.bias": (vocab,),
                **recurrent_shapes(cell, inputs, hidden, layers, False, prefix)}
    state_dict.check(tensors, expected, src, f"character LM (nn.Embedding + nn.{cell.upper()} + nn.Linear)")
    tokenizer, order = _tokenizer(state_dict.meta_beside(src, given, "chars: the vocabulary in id order"), vocab, src)
    rows = (lambda a: a[order]) if order is not None else (lambda a: a)
    rnn = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and _PARAM.match(k)}
    params = {"params": {"embedding": {"embedding": rows(tensors[f"{embedding}.weight"])},
                         "rnn": params_from_torch(rnn, layers)["params"],
                         "head": {"kernel": np.ascontiguousarray(rows(tensors[f"{head}.weight"]).T),
                                  "bias": rows(tensors[f"{head}.bias"])}}}
    model = RecurrentLM(vocab_size=vocab, cell=cell, embed=inputs, hidden=hidden, layers=layers)
    prompt = {"ids": "0", "byte": "\n"}.get(tokenizer["kind"])  # where generation starts without a prompt
    if prompt is None:
        prompt = "\n" if "\n" in tokenizer["chars"] else tokenizer["chars"][0]
    info = language_model_info(model, params, tokenizer, f"converted:{os.path.basename(src)}", prompt)
    return Converted(info, params)


def export(trained) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state dict, FILE.json contents) of a trained RecurrentLM: names `embedding`, `rnn`, `head`, as
    nn.Embedding(vocab, embed), nn.{RNN,LSTM,GRU}(embed, hidden, layers, batch_first=True), nn.Linear."""
    f = trained.info["model"]["fields"]
    p = trained.params["params"]
    out = {"embedding.weight": np.array(p["embedding"]["embedding"], np.float32),
           "head.weight": np.ascontiguousarray(np.asarray(p["head"]["kernel"], np.float32).T),
           "head.bias": np.array(p["head"]["bias"], np.float32)}
    out.update({f"rnn.{k}": v for k, v in params_to_torch(p["rnn"], f["layers"]).items()})
    tokenizer = trained.info["tokenizer"]
    meta = {"cell": f["cell"], "vocab_size": f["vocab_size"], "embed": f["embed"], "hidden": f["hidden"],
            "layers": f["layers"], "tokenizer": tokenizer}
    if tokenizer.get("kind") == "char":
        meta["chars"] = tokenizer["chars"]
    return out, meta
