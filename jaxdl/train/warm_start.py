"""Fine-tuning: start a new run from another run's best params (`--init-from WORKDIR`).

Every array whose path and shape match is taken from the trained run. Arrays indexed by the run's
labels (a classifier head's classes, a language model's embedding and output rows) are matched
label by label: a class or character both runs know keeps its trained row, a new one starts fresh,
whether or not the counts agree. Which arrays, and along which axis, is found by building the
model with one more label and seeing which shapes move. Anything else that does not fit keeps its
fresh initialisation; all of it is named. A run of another model class is refused.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.errors import UsageError
from jaxdl.train.description import load_params, read_info

def _path(keypath: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keypath)


def label_axes(model: nn.Module, init: Callable[[nn.Module], Any], field: str | None) -> dict[str, int]:
    """{path: axis} of the arrays with an axis as long as the model's `field` (its label count)."""
    if not field or not hasattr(model, field):
        return {}
    grown = model.clone(**{field: getattr(model, field) + 1})
    shapes = lambda m: {_path(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(jax.eval_shape(lambda: init(m)))}
    a, b = shapes(model), shapes(grown)
    return {p: next(i for i, (m, n) in enumerate(zip(s, b[p])) if m != n) for p, s in a.items() if b.get(p) != s}


def _remap(fresh: jax.Array, trained: jax.Array, axis: int, rows: list[int | None]) -> jax.Array:
    """`fresh` with each row i along `axis` replaced by `trained`'s row rows[i] where there is one."""
    out = np.array(fresh)
    src = np.asarray(trained)
    for i, j in enumerate(rows):
        if j is not None:
            np.moveaxis(out, axis, 0)[i] = np.moveaxis(src, axis, 0)[j]
    return jnp.asarray(out, fresh.dtype)


def warm_start(init_from: str, params: Any, info: dict, init: Callable[[nn.Module], Any] | None = None,
               model: nn.Module | None = None) -> Any:
    """`params` with everything of `init_from`'s best checkpoint that fits; `info` is this run's
    model.json (its family and model class must match); `init(model) -> params` (with `model`) lets
    the arrays indexed by labels be matched label by label. No-op for an empty `init_from`."""
    if not init_from:
        return params
    source = read_info(init_from)
    theirs, ours = source["model"]["class"], info["model"]["class"]
    if source["family"] != info["family"] or theirs != ours:
        raise UsageError(f"--init-from {init_from} is a {source['family']} run ({theirs}); this run trains a "
                         f"{info['family']} ({ours}): start from a run of the same model")
    trained, step = load_params(init_from, source, "best")
    old, new = source.get("labels"), info.get("labels")  # what the rows mean (run_info writes them)
    changed = old != new and init is not None and model is not None
    axes = label_axes(model, init, info.get("label_field")) if changed else {}
    rows = [old.index(x) if x in old else None for x in new] if axes else []
    found = {_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(trained)}
    taken, partly, fresh = 0, [], []

    def take(keypath, x):
        nonlocal taken
        path = _path(keypath)
        y = found.get(path)
        if path in axes and y is not None and old and y.ndim == x.ndim and y.shape[axes[path]] == len(old) and all(
                a == b for i, (a, b) in enumerate(zip(x.shape, y.shape)) if i != axes[path]):
            kept = sum(r is not None for r in rows)
            partly.append(f"{path} ({kept} of {len(rows)} rows)")
            return _remap(x, y, axes[path], rows)
        if y is not None and y.shape == x.shape and path not in axes:
            taken += 1
            return jnp.asarray(y, x.dtype)
        fresh.append(f"{path} {tuple(x.shape)}" + (f" (trained {tuple(y.shape)})" if y is not None else ""))
        return x

    params = jax.tree_util.tree_map_with_path(take, params)
    total = taken + len(partly) + len(fresh)
    print(f"Initialised from {init_from} (step {step}): {taken} of {total} arrays whole"
          + (f"; by shared label: {', '.join(partly)}"
             if partly else "")
          + (f"; re-initialised: {', '.join(fresh)}" if fresh else ""), flush=True)
    return params
