"""Orbax checkpoints of the whole TrainState plus the loop's place: keep the last K and the best.

Each checkpoint holds two items: `state` (the TrainState, written by all
processes together, each its own shards) and `loop` (JSON: the per-step train
metrics of the unfinished round, so a resumed round logs what an uninterrupted
one would). Orbax writes a checkpoint into a temporary directory and renames it
when complete, so a process killed mid-save leaves nothing that is read back.

Restoring:
- onto the shardings of the state it is given, whatever mesh wrote it (8 devices
  -> 1, 1 -> 4, data -> fsdp);
- checks the saved shapes first, so a workdir made by a different model stops with
  a UsageError instead of loading garbage;
- a checkpoint that cannot be read (truncated, corrupt) is moved to
  `checkpoints.damaged/` with a warning naming it, and the previous one is used.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from jaxdl.errors import UsageError
from jaxdl.runtime import is_primary
from jaxdl.train.abandoned_reads import collect_abandoned_reads, quiet_abandoned_reads
from jaxdl.train.state import step_of


def _abs(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


class Checkpoints:
    absolute = staticmethod(lambda path: _abs(path))  # a local path made absolute; a gs:// one as it is

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
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
            "state": ocp.StandardCheckpointHandler(), "loop": ocp.JsonCheckpointHandler()})

    def restore_or(self, state: Any) -> tuple[Any, dict]:
        """(state, loop) from the newest readable checkpoint, onto `state`'s shardings; or (`state`, {})."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        quiet_abandoned_reads()  # a damaged checkpoint's leftover reads report the moment the read fails
        unreadable: list[tuple[int, str]] = []  # (step, the error's type name): no live exceptions kept
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                saved = self.manager.item_metadata(step)["state"]
            except Exception as e:
                unreadable.append((step, type(e).__name__))
                continue
            self._check_shapes(saved, state)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore()))
            except Exception as e:
                unreadable.append((step, type(e).__name__))
                del e
                collect_abandoned_reads()
                continue
            self._set_aside(unreadable, step)
            return restored["state"], dict(restored["loop"] or {})
        if unreadable:  # nothing to fall back to: leave them where they are
            step, error = unreadable[0]
            raise UsageError(f"checkpoint {self.directory}/{step} cannot be read ({error}) and there is "
                             "no earlier one: delete it or use a new --workdir")
        return state, {}

    def _set_aside(self, unreadable: list[tuple[int, str]], good: int) -> None:
        """Move unreadable checkpoints newer than `good` out of the way (kept for inspection), saying so."""
        damaged = epath.Path(self.directory).parent / "checkpoints.damaged"
        for step, error in unreadable:
            print(f"warning: checkpoint {self.directory}/{step} cannot be read ({error}): moved to "
                  f"{damaged}/{step}; resuming from step {good}", file=sys.stderr, flush=True)
            if is_primary():
                damaged.mkdir(parents=True, exist_ok=True)
                (epath.Path(self.directory) / str(step)).rename(damaged / str(step))
        if unreadable:
            if jax.process_count() > 1:
                ocp.multihost.sync_global_processes(f"jaxdl_set_aside_{good}")
            self.manager.reload()

    def _check_shapes(self, saved: Any, state: Any) -> None:
        saved_shapes = {_path(p): tuple(getattr(m, "shape", ()) or ()) for p, m in jax.tree_util.tree_leaves_with_path(saved)}
        want_shapes = {_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(state)}
        for path, shape in want_shapes.items():
            if saved_shapes.get(path) != shape:
                got = saved_shapes.get(path, "missing")
                raise UsageError(f"--workdir {os.path.dirname(self.directory)} holds a checkpoint of a different model or "
                                 f"optimizer ({path}: saved {got}, this run {shape}): use a new --workdir or the same config")

    def save(self, state: Any, loop: dict | None = None, metrics: dict[str, float] | None = None) -> None:
        step = step_of(state)
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        loop=ocp.args.JsonSave(loop or {})),
                          metrics=metrics, force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def load_trained(state: Any, directory: str, flag: str) -> Any:
    """The newest checkpoint in `directory`, for a run that only uses a trained model (`flag`, e.g.
    --sample-only); a UsageError if there is none."""
    if not epath.Path(_abs(directory)).exists():
        raise UsageError(f"{flag}: {directory} does not exist: train first (drop {flag}) or point --workdir "
                         "at a trained run")
    ckpt = Checkpoints(directory)
    state, _ = ckpt.restore_or(state)
    ckpt.close()
    if step_of(state) == 0:
        raise UsageError(f"{flag}: no checkpoint in {directory}: train first (drop {flag})")
    return state


def _path(keypath: tuple) -> str:
    """`params/conv1/kernel`, whether the tree holds dataclass fields, dict keys or sequence indices."""
    names = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in keypath)
    return "/".join(str(n) for n in names)


def restore_params(directory: str, which: str | int = "best", subtree: tuple[str, ...] = ("params",),
                   best_metric: str | None = None, best_mode: str = "max") -> tuple[Any, int]:
    """(the `subtree` of a saved TrainState, its step), read alone (no optimizer state) onto this
    process's first device, whatever mesh wrote it. `which`: "best" (by `best_metric`, else the
    latest), "latest" or a step number. Missing or unreadable checkpoints raise UsageError."""
    import absl.logging

    directory = _abs(directory)
    if not epath.Path(directory).exists():
        raise UsageError(f"{directory} does not exist: the run saved no checkpoint there yet")
    quiet_abandoned_reads()
    verbosity = absl.logging.get_verbosity()
    absl.logging.set_verbosity(absl.logging.ERROR)  # orbax warns about read-only use and unrestored items
    try:
        options = ocp.CheckpointManagerOptions(
            best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode=best_mode, create=False,
            read_only=True)
        manager = ocp.CheckpointManager(directory, options=options, item_handlers={
            "state": ocp.PyTreeCheckpointHandler(), "loop": ocp.JsonCheckpointHandler()})
        steps = sorted(manager.all_steps())
        if not steps:
            raise UsageError(f"{directory} holds no checkpoint: train the run first")
        if which == "latest" or (which == "best" and not best_metric):
            step = steps[-1]
        elif which == "best":
            step = manager.best_step()
            step = steps[-1] if step is None else step
        else:
            step = int(which)
            if step not in steps:
                raise UsageError(f"{directory} has no checkpoint of step {step}: it has {', '.join(map(str, steps))}")
        try:
            tree = manager.item_metadata(step)["state"]
            tree = getattr(tree, "tree", tree)
            for key in subtree:
                tree = tree[key]
        except Exception as e:
            raise UsageError(f"checkpoint {directory}/{step} cannot be read ({type(e).__name__}): pick another "
                             "with --checkpoint STEP") from None
        here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here), tree)
        for key in reversed(subtree):
            target = {key: target}
        restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=here), target)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=target, restore_args=restore_args, partial_restore=True)))["state"]
        except Exception as e:
            error = type(e).__name__
            del e
            collect_abandoned_reads()
            raise UsageError(f"checkpoint {directory}/{step} cannot be read ({error}): pick another "
                             "with --checkpoint STEP") from None
        manager.close()
    finally:
        absl.logging.set_verbosity(verbosity)
    for key in subtree:
        restored = restored[key]
    return restored, step
