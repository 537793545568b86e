"""PyTorch state dicts as plain numpy: read from safetensors or `.pt/.pth/.bin`, checked, written.

A state dict here is `{name: float32 numpy array}`, the names PyTorch's `module.state_dict()` uses.
safetensors files are read with the `safetensors` package (no torch needed); pickled PyTorch files
only through `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers (never a full unpickle). A Hugging Face directory is read through its
`model.safetensors`, the shards its `model.safetensors.index.json` lists, or `pytorch_model.bin`.
Every problem is a UsageError of one line.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from typing import Any, Mapping

import numpy as np

from jaxdl.errors import UsageError

PICKLED = (".pt", ".pth", ".bin")
HF_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def read(path: str) -> dict[str, np.ndarray]:
    """The state dict in `path` (a file, or a Hugging Face model directory)."""
    if os.path.isdir(path):
        return read(_weights_in(path))
    if not os.path.isfile(path):
        raise UsageError(f"{path} does not exist: give a .safetensors, .pt, .pth or .bin file")
    if path.endswith(".index.json"):
        return _read_shards(path)
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    if path.endswith(PICKLED):
        return _read_pickled(path)
    raise UsageError(f"{path}: not a weights file jaxdl reads (.safetensors, or PyTorch's .pt, .pth, .bin)")


def _weights_in(directory: str) -> str:
    for name in HF_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise UsageError(f"{directory} has none of {', '.join(HF_FILES)}: point at the weights file itself")


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise UsageError(f"{path} is not a readable safetensors file ({_first_line(e)})") from None
    return {name: _float32(name, value, path) for name, value in tensors.items()}


def _read_shards(index_path: str) -> dict[str, np.ndarray]:
    try:
        with open(index_path) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{index_path} is not a safetensors index (a weight_map of names to files): "
                         f"{type(e).__name__}") from None
    out: dict[str, np.ndarray] = {}
    for name in files:
        out.update(_read_safetensors(os.path.join(os.path.dirname(index_path), name)))
    return out


def _read_pickled(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UsageError(f"{path} is a pickled PyTorch file: reading it needs torch (pip install torch), or save "
                         "the weights as .safetensors, which jaxdl reads without it") from None
    import pickle

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses in one line anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if refused:
            raise UsageError(f"{path} holds more than tensors ({refused[1]}), which torch.load(weights_only=True) "
                             "refuses to unpickle: save model.state_dict() alone") from None
        raise UsageError(f"{path} is not a PyTorch weights file that torch.load(weights_only=True) reads: save "
                         "model.state_dict() with torch.save") from None
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError) as e:
        raise UsageError(f"{path} is not a PyTorch weights file ({_first_line(e)[:160]})") from None
    if not isinstance(loaded, Mapping) or not loaded:
        raise UsageError(f"{path} holds a {type(loaded).__name__}, not a state dict (names to tensors): save "
                         "model.state_dict()")
    nested = [k for k, v in loaded.items() if isinstance(v, Mapping)]
    if nested:
        raise UsageError(f"{path} holds a dict of dicts ({', '.join(map(str, nested[:4]))}), not a state dict: save "
                         "model.state_dict() alone, or that entry of it")
    bad = [str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UsageError(f"{path} is not a state dict: {', '.join(bad[:4])} hold no tensors")
    return {str(k): _float32(str(k), v.detach().to(torch.float32).numpy() if v.is_floating_point() else v.numpy(), path)
            for k, v in loaded.items()}


def _float32(name: str, value: Any, path: str) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
        return np.asarray(a, np.float32)
    if a.dtype.kind in "iub":  # buffers such as a step count or a causal mask: kept, usually ignored
        return a
    raise UsageError(f"{path}: {name} has dtype {a.dtype}, which jaxdl does not convert")


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def check(found: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], src: str, what: str) -> None:
    """Refuse a state dict whose names or shapes differ from `expected`, naming each difference."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [f"{k} expected {tuple(expected[k])}, found {tuple(found[k].shape)}" for k in expected
                 if k in found and tuple(found[k].shape) != tuple(expected[k])]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            problems.append(f"{label} {', '.join(items[:4])}" + (f" and {len(items) - 4} more" if len(items) > 4 else ""))
    if problems:
        raise UsageError(f"{src} is not a {what} state dict: {'; '.join(problems)}")


def meta_beside(src: str, given: Mapping[str, Any], holds: str) -> dict[str, Any]:
    """What the weights do not say: `SRC.json` (the weights' name with .json, e.g. my_net.json; it
    `holds` what the message names), overridden by the values given as flags (None: not given)."""
    beside = os.path.splitext(src)[0] + ".json"
    meta: dict[str, Any] = {}
    if os.path.isfile(beside):
        try:
            with open(beside) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"{beside} cannot be read ({type(e).__name__}): fix it or give the values as flags") from None
        if not isinstance(meta, dict):
            raise UsageError(f"{beside} must hold a JSON object ({holds})")
    return {**meta, **{k: v for k, v in given.items() if v is not None}}


def write(tensors: Mapping[str, Any], path: str, metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` as safetensors, atomically (a partial file never takes `path`'s name)."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in tensors.items()}
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        save_file(arrays, tmp, metadata=dict(metadata or {}))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
