"""Fine-tuning: start a new run from another run's best params (`--init-from WORKDIR`).

Every array whose path and shape match is taken from the trained run; the others (a head for
another number of classes, embeddings for another vocabulary) keep their fresh initialisation and
are named. Where the classes or the tokenizer differ but the shapes happen to agree, the arrays
that depend on them are re-initialised all the same (found by building the model with one more
class or token and seeing which shapes move). A run of another model class is refused.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

from jaxdl.errors import UsageError
from jaxdl.train.description import load_params, read_info

# where each family keeps what its head's (or embedding's) rows mean, and the model field sizing them
_LABELS = {"classifier": (("classifier", "class_names"), ("num_classes", "out")),
           "language_model": (("tokenizer",), ("vocab_size",))}


def _path(keypath: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keypath)


def _labels(info: dict) -> Any:
    keys, _ = _LABELS.get(info["family"], ((), ()))
    value: Any = info if keys else None
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    return value


def dependent_arrays(model: nn.Module, init: Callable[[nn.Module], Any], family: str) -> set[str]:
    """Paths of the arrays whose shape follows the family's label count (classes or vocabulary)."""
    fields = [f for f in _LABELS.get(family, ((), ()))[1] if hasattr(model, f)]
    if not fields:
        return set()
    grown = model.clone(**{fields[0]: getattr(model, fields[0]) + 1})
    a = jax.tree_util.tree_leaves_with_path(jax.eval_shape(lambda: init(model)))
    b = dict(jax.tree_util.tree_leaves_with_path(jax.eval_shape(lambda: init(grown))))
    b = {_path(p): x.shape for p, x in b.items()}
    return {_path(p) for p, x in a if b.get(_path(p)) != x.shape}


def warm_start(init_from: str, params: Any, info: dict, init: Callable[[nn.Module], Any] | None = None,
               model: nn.Module | None = None) -> Any:
    """`params` with every array of `init_from`'s best checkpoint that fits; `info` is this run's
    model.json (its family and model class must match); `init(model) -> params` (with `model`) lets
    arrays tied to changed classes or vocabulary be found. No-op for an empty `init_from`."""
    if not init_from:
        return params
    source = read_info(init_from)
    theirs, ours = source["model"]["class"], info["model"]["class"]
    if source["family"] != info["family"] or theirs != ours:
        raise UsageError(f"--init-from {init_from} is a {source['family']} run ({theirs}); this run trains a "
                         f"{info['family']} ({ours}): start from a run of the same model")
    trained, step = load_params(init_from, source, "best")
    changed = set()
    if _labels(source) != _labels(info) and init is not None and model is not None:
        changed = dependent_arrays(model, init, info["family"])
    found = {_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(trained)}
    kept, fresh = 0, []

    def take(keypath, x):
        nonlocal kept
        path = _path(keypath)
        y = found.get(path)
        if y is not None and y.shape == x.shape and path not in changed:
            kept += 1
            return jax.numpy.asarray(y, x.dtype)
        fresh.append(f"{path} {tuple(x.shape)}" + (f" (trained {tuple(y.shape)})" if y is not None and
                                                    y.shape != x.shape else ""))
        return x

    params = jax.tree_util.tree_map_with_path(take, params)
    print(f"Initialised from {init_from} (step {step}): {kept} of {kept + len(fresh)} arrays"
          + (f"; re-initialised (shape or meaning changed): {', '.join(fresh)}" if fresh else ""), flush=True)
    return params
