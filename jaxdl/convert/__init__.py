"""Weights across the border: PyTorch models in, jaxdl runs out.

    from_torch(kind, src, out, **meta)   a state dict -> a jaxdl workdir (model.json + checkpoint)
    to_torch(workdir, out)               a jaxdl run -> safetensors for the PyTorch module it matches

Kinds in: `mynet` (the seed's MY_NET), `rnn-lm` / `lstm-lm` / `gru-lm` (nn.Embedding + nn.RNN/LSTM/GRU
+ nn.Linear), `gpt2` (a Hugging Face GPT2LMHeadModel directory: config.json + weights). Out: MyNet
runs -> MY_NET, RecurrentLM runs -> the same character LM, GPT-2-shaped DecoderLM runs -> a
directory GPT2LMHeadModel.from_pretrained opens. Bare nn.RNN/LSTM/GRU modules (any layers,
bidirectional) convert in code: `jaxdl.convert.recurrent`. torch is never needed, except to read
pickled `.pt/.pth/.bin` files.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

from jaxdl.errors import UsageError

IMPORTERS = {"mynet": "mynet", "rnn-lm": "recurrent", "lstm-lm": "recurrent", "gru-lm": "recurrent", "gpt2": "gpt2"}
META = {"mynet": ("classes", "mean", "std", "data_size", "data_channels"), "gpt2": (),
        **{f"{cell}-lm": ("chars", "tokenizer") for cell in ("rnn", "lstm", "gru")}}  # what each kind's weights lack
EXPORTERS = {"MyNet": "mynet", "RecurrentLM": "recurrent", "DecoderLM": "gpt2"}


def _module(name: str):
    return importlib.import_module(f"jaxdl.convert.{name}")


def from_torch(kind: str, src: str, out: str, **meta: Any) -> str:
    """Convert the PyTorch weights in `src` into a new jaxdl workdir `out`; returns `out`. `meta`:
    what the weights do not say (mynet: classes, mean, std, data_size, data_channels; the LMs: chars)."""
    from jaxdl.convert import workdir

    if kind not in IMPORTERS:
        raise UsageError(f"unknown --from {kind!r}: use one of {', '.join(IMPORTERS)}")
    workdir.check_out(out)
    if not os.path.exists(src):
        raise UsageError(f"{src} does not exist")
    converted = _module(IMPORTERS[kind]).convert_in(kind, src, meta)
    workdir.write(out, converted, src)
    return out


def to_torch(workdir: str, out: str, checkpoint: str | int = "best") -> list[str]:
    """Write the run's weights in PyTorch's names and layouts; returns the files written. MyNet and
    recurrent LMs: `out` is a .safetensors file (its classes, normalisation or characters go to
    `out` with .json); a DecoderLM: `out` is a new directory of config.json + model.safetensors."""
    import jaxdl

    trained = jaxdl.load(workdir, checkpoint)
    name = trained.info["model"]["class"]
    if name not in EXPORTERS:
        raise UsageError(f"{workdir} is a {name}; --to torch converts {', '.join(EXPORTERS)} runs")
    module = _module(EXPORTERS[name])
    if hasattr(module, "export_directory"):
        return module.export_directory(trained, out)
    if not out.endswith(".safetensors") or os.path.isdir(out):
        raise UsageError(f"--out {out}: name the file *.safetensors")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out}: its folder {parent} does not exist or is not writable")
    from jaxdl.convert import state_dict

    tensors, meta = module.export(trained)
    state_dict.write(tensors, out, {"format": "pt"})
    beside = out[:-len(".safetensors")] + ".json"
    with open(beside, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return [out, beside]
