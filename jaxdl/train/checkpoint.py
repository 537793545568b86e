"""Orbax checkpoints of the whole TrainState: keep the last K and the best.

Restoring checks the saved shapes against the state the run builds, so a
workdir made by a different model stops with a UsageError instead of loading
garbage or crashing halfway.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxdl.errors import UsageError
from jaxdl.train.state import step_of


def _abs(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


class Checkpoints:
    def __init__(self, directory: str, keep: int = 3, best_metric: str | None = None, best_mode: str = "max"):
        self.directory = _abs(directory)
        keep_policies = [policies.LatestN(n=keep)]
        if best_metric:
            keep_policies.append(policies.BestN(
                get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
                keep_checkpoints_without_metrics=False))
        # best_fn makes orbax write each checkpoint's metrics to disk, so the best survives a resume;
        # synchronous saves: the next (donating) step must not overwrite buffers being written
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep_policies),
            best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode=best_mode,
            enable_async_checkpointing=False, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                            item_handlers=ocp.StandardCheckpointHandler())

    def restore_or(self, state: Any) -> Any:
        """The latest checkpoint restored into `state`'s structure, or `state` if there is none."""
        step = self.manager.latest_step()
        if step is None:
            return state
        self._check_shapes(step, state)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:
            raise UsageError(f"checkpoint {self.directory}/{step} cannot be read ({type(e).__name__}): "
                             "delete it or use a new --workdir") from None

    def _check_shapes(self, step: int, state: Any) -> None:
        try:
            saved = self.manager.item_metadata(step)
        except Exception as e:
            raise UsageError(f"checkpoint {self.directory}/{step} cannot be read ({type(e).__name__}): "
                             "delete it or use a new --workdir") from None
        saved_shapes = {_path(p): tuple(getattr(m, "shape", ()) or ()) for p, m in jax.tree_util.tree_leaves_with_path(saved)}
        want_shapes = {_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(state)}
        for path, shape in want_shapes.items():
            if saved_shapes.get(path) != shape:
                got = saved_shapes.get(path, "missing")
                raise UsageError(f"--workdir {os.path.dirname(self.directory)} holds a checkpoint of a different model or "
                                 f"optimizer ({path}: saved {got}, this run {shape}): use a new --workdir or the same config")

    def save(self, state: Any, metrics: dict[str, float] | None = None) -> None:
        step = step_of(state)
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _path(keypath: tuple) -> str:
    """`params/conv1/kernel`, whether the tree holds dataclass fields, dict keys or sequence indices."""
    names = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in keypath)
    return "/".join(str(n) for n in names)
