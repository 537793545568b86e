"""`jax.export` artifacts of a trained model's forward pass: callable from a process that has only jax.

    classifier  preprocessed images (b, S, S, C) float32 -> logits (b, K)
    lm          token ids (b, t) int32 -> next-token logits (b, t, V)   (t <= the context, if any)
    vector      features (b, D) float32 -> outputs (b, O)

The batch (and, for language models, the length) is symbolic, the params are baked in as constants,
and the function is lowered for every platform asked for (CPU, CUDA, TPU by default). Beside
`FILE` goes `FILE.json`: what a caller needs (input shape and dtype, normalisation, classes or
vocabulary). Load it with `jax.export.deserialize(open(FILE, "rb").read()).call(x)`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl.errors import UsageError
from jaxdl.inference.trained import Trained

PLATFORMS = ("cpu", "cuda", "tpu")


def _function(trained: Trained) -> tuple[Any, jax.ShapeDtypeStruct, dict[str, Any]]:
    """(forward function, its symbolic input, what the JSON sidecar says about it)."""
    info, model, params = trained.info, trained.model, trained.params
    family = info["family"]
    if family == "classifier":
        c = info["classifier"]
        S, C = c["input_size"], c["input_channels"]
        (b,) = jax.export.symbolic_shape("b")
        flat = c["flatten"]
        fn = lambda x: model.apply(params, x.reshape(x.shape[0], -1) if flat else x)
        return fn, jax.ShapeDtypeStruct((b, S, S, C), jnp.float32), {
            "input": {"shape": ["batch", S, S, C], "dtype": "float32",
                      "preprocessing": "as in training: bring the image to data_size and data_channels (grey "
                                       "to RGB by copying, RGB to grey by luma 0.299/0.587/0.114), pixels / 255, "
                                       "resize (bilinear, antialiased) to the input size, (x - mean) / std per "
                                       "data channel, then to the input channels the same way",
                      "data_size": c["data_size"], "data_channels": c["data_channels"], "mean": c["mean"],
                      "std": c["std"]},
            "output": "logits (batch, classes)", "class_names": c["class_names"]}
    if family == "language_model":
        context = info["language_model"]["context"]
        b, t = jax.export.symbolic_shape("b, t", constraints=[f"t <= {context}"] if context else ())
        fn = lambda tokens: model.apply(params, tokens)[0]
        return fn, jax.ShapeDtypeStruct((b, t), jnp.int32), {
            "input": {"shape": ["batch", "time"], "dtype": "int32", "max_time": context},
            "output": "next-token logits (batch, time, vocabulary)", "tokenizer": info["tokenizer"]}
    if family == "vector":
        v = info["vector"]
        (b,) = jax.export.symbolic_shape("b")
        fn = lambda x: model.apply(params, x)
        return fn, jax.ShapeDtypeStruct((b, v["inputs"]), jnp.float32), {
            "input": {"shape": ["batch", v["inputs"]], "dtype": "float32"},
            "output": "logits (binary cross-entropy: apply a sigmoid)" if v["loss"] == "bce" else "values",
            "task": v["task"]}
    raise UsageError(f"export covers classifiers, language models and MLPs; {trained.workdir} is a {family} run")


def export(trained: Trained, out: str, platforms: tuple[str, ...] = PLATFORMS) -> dict[str, Any]:
    """Write the serialized forward pass to `out` and its description to `out + ".json"`; returns it."""
    fn, arg, meta = _function(trained)
    unknown = sorted(set(platforms) - {"cpu", "cuda", "rocm", "tpu"})
    if unknown or not platforms:
        raise UsageError(f"unknown platform(s) {', '.join(unknown) or '(none)'}: use cpu, cuda, rocm, tpu")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK) or os.path.isdir(out):
        raise UsageError(f"--out {out}: cannot write there (no such folder, not writable, or a folder)")
    workdir = os.path.abspath(trained.workdir)
    if os.path.commonpath([workdir, os.path.abspath(out)]) == workdir:
        raise UsageError(f"--out {out} is inside the run's workdir {trained.workdir}, which holds the run's own "
                         "files: write the export elsewhere")
    exported = jax.export.export(jax.jit(fn), platforms=list(platforms))(arg)
    meta = {"format": 1, "workdir": os.path.abspath(trained.workdir), "step": trained.step,
            "model": trained.info["model"], "family": trained.family, "platforms": list(exported.platforms),
            **meta}
    try:
        for path, data, mode in ((out, exported.serialize(), "wb"),
                                 (out + ".json", json.dumps(meta, indent=2) + "\n", "w")):
            with open(path + ".tmp", mode) as f:
                f.write(data)
            os.replace(path + ".tmp", path)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write ({e.strerror})") from None
    return meta
