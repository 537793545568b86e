"""`model.json`: what a run trains, written into its workdir as plain JSON data (never code).

The engine does not know what is inside (the tasks fill it: the model's class and fields, classes,
normalisation, tokenizer, noise schedule, ...); it adds where the checkpoints are and which one is
best, writes the file when a run starts, and refuses to resume a workdir whose description differs
in anything but the checkpoint directory and the model fields that change how it computes, not
what (HOW_FIELDS), naming the fields that differ.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax

from jaxdl.errors import UsageError
from jaxdl.runtime import is_primary
from jaxdl.train.checkpoint import restore_params

FILE = "model.json"
FORMAT = 1  # bumped when a reader of an older model.json would misread a newer one
# model fields that change how a model computes, not what nor its params: recompute in the backward
# pass, layers per scan iteration, the attention kernel
HOW_FIELDS = ("remat", "unroll", "implementation")
# a run may move its checkpoints (e.g. to a bucket) and change HOW_FIELDS
_MAY_CHANGE = ("checkpoints.directory", *(f"model.fields.{name}" for name in HOW_FIELDS))
SUBTREES = {"params": ("params",), "ema": ("extras", "ema")}  # where in the TrainState inference params live


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def differences(saved: dict, new: dict) -> list[str]:
    """`path: saved -> new` for every leaf that differs (lists compared whole)."""
    a, b = _flat(saved), _flat(new)
    return [f"{k}: {a.get(k, 'missing')!r} -> {b.get(k, 'missing')!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in _MAY_CHANGE]


def read(workdir: str) -> dict | None:
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} cannot be read ({type(e).__name__}): restore it or use a new --workdir") from None


def plain(description: dict) -> dict:
    """The description as it reads back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(description))


def check(workdir: str, description: dict) -> None:
    """Refuse a workdir whose model.json describes another model; UsageError naming the fields.
    Only the top-level keys `description` has are compared (a sampler need not know where the
    checkpoints are)."""
    saved = read(workdir)
    if saved is None:
        return
    saved = _with_current_fields(saved)
    diff = differences({k: v for k, v in saved.items() if k in description}, plain(description))
    if diff:
        more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
        raise UsageError(f"--workdir {workdir} holds a different model ({'; '.join(diff[:3])}{more}): use the same "
                         "settings or a new --workdir")


# How a saved model entry reads in this jaxdl (a field a class gained since the run started taken as its
# default, what the run computed, as defaults never change). The engine knows no model classes:
# jaxdl.tasks.run_info, which writes every description, sets it; unset, entries compare as written.
_current_model: Callable[[dict], dict] | None = None


def read_models_with(current_model: Callable[[dict], dict]) -> None:
    global _current_model
    _current_model = current_model


def _with_current_fields(saved: dict) -> dict:
    """`saved` with its model entry as `read_models_with`'s function reads it, where that works."""
    if _current_model is None:
        return saved
    try:
        return {**saved, "model": _current_model(saved["model"])}
    except (KeyError, TypeError, ValueError, AttributeError):  # compared as written: the difference is named
        return saved


def write(workdir: str, description: dict) -> None:
    """Write model.json atomically (process 0 only); unchanged files are left alone."""
    if not is_primary():
        return
    description = plain(description)
    if read(workdir) == description:
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(description, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def read_info(workdir: str) -> dict[str, Any]:
    """model.json of `workdir`, checked for a format this jaxdl reads; UsageError otherwise."""
    if not os.path.isdir(workdir):
        raise UsageError(f"{workdir} is not a directory: point at a run's --workdir")
    info = read(workdir)
    if info is None:
        raise UsageError(f"{workdir} has no model.json: not a trained jaxdl run (train one with experiments/, "
                         "or point at its --workdir)")
    if not isinstance(info, dict) or not isinstance(info.get("format"), int) or not isinstance(info.get("family"), str):
        raise UsageError(f"{workdir}/model.json is not a jaxdl model description: restore it or retrain")
    if info["format"] > FORMAT:
        raise UsageError(f"{workdir}/model.json has format {info['format']}, newer than this jaxdl reads "
                         f"({FORMAT}): upgrade jaxdl")
    model, ckpt, members = info.get("model"), info.get("checkpoints"), info.get("members", 1)
    if not (isinstance(model, dict) and isinstance(model.get("class"), str) and isinstance(model.get("fields"), dict)
            and isinstance(ckpt, dict) and info.get("params", "params") in SUBTREES
            and isinstance(members, int) and members >= 1):
        raise UsageError(f"{workdir}/model.json is damaged (its model, checkpoints, params or members entry): "
                         "restore it or retrain")
    return info


def checkpoint_dir(workdir: str, info: dict[str, Any]) -> str:
    return info["checkpoints"].get("directory") or os.path.join(workdir, "checkpoints")


def load_params(workdir: str, info: dict[str, Any], checkpoint: str | int = "best", member: int = 0
                ) -> tuple[Any, int]:
    """(params, step) of the run's `checkpoint` ("best", "latest" or a step); model `member` of a
    run that trained several at once."""
    if not (checkpoint in ("best", "latest") or str(checkpoint).isdigit()):
        raise UsageError(f"checkpoint must be best, latest or a step number, got {checkpoint!r}")
    ckpt = info["checkpoints"]
    params, step = restore_params(checkpoint_dir(workdir, info), checkpoint, SUBTREES[info.get("params", "params")],
                                  ckpt.get("best_metric"), ckpt.get("best_mode", "max"))
    members = info.get("members", 1)
    if members > 1 or member:
        if not 0 <= member < members:
            raise UsageError(f"{workdir} holds {members} model(s): member must be in 0..{members - 1}, got {member}")
        params = jax.tree.map(lambda x: x[member], params)
    return params, step
