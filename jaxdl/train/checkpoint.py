"""Orbax checkpoints of the whole TrainState plus the loop's place: keep the last K and the best.

Each checkpoint holds two items: `state` (the TrainState, written by all
processes together, each its own shards) and `loop` (JSON: the per-step train
metrics of the unfinished round, so a resumed round logs what an uninterrupted
one would, and `format`, the CHECKPOINT_FORMAT that wrote it; checkpoints from
before the number was kept have none and are format 1). Orbax writes a
checkpoint into a temporary directory and renames it when complete, so a
process killed mid-save leaves nothing that is read back.

Saving: a write the storage refuses (disk full, directory gone or read-only)
raises WriteFailed naming the directory and the OS error; the checkpoints
completed before are untouched, and the failed one's temporary directory is
removed.

Restoring:
- onto the shardings of the state it is given, whatever mesh wrote it (8 devices
  -> 1, 1 -> 4, data -> fsdp);
- checks the saved shapes first, so a workdir made by a different model stops with
  a UsageError instead of loading garbage;
- refuses a checkpoint of another format with a UsageError (a newer one: upgrade
  jaxdl; an older one: see `_older_format`), leaving it where it is;
- a checkpoint whose own bytes cannot be read (truncated, corrupt) is moved to
  `checkpoints.damaged/` with a warning naming it, and the previous one is used;
  a failure of the storage itself (permissions, a lost mount, a failing disk:
  an OS error, or one met opening the checkpoint's files) is a UsageError naming
  the path and the error, and nothing is moved.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from jaxdl.errors import UsageError, WriteFailed
from jaxdl.runtime import is_primary
from jaxdl.train.orbax_noise import (collect_abandoned_reads, quiet_abandoned_reads, quiet_failed_writes,
                                     quiet_unranked_saves)
from jaxdl.train.state import step_of

PARTIAL_REMOVAL_TRIES, PARTIAL_SETTLE_S = 5, 0.05  # removing a failed save's files (_remove_partial)

CHECKPOINT_FORMAT = 1  # bumped when a jaxdl that reads this number could misread a checkpoint of the next


# OS errors that mean files of the checkpoint itself are missing or misshapen: damage, like bad bytes.
# Any other (permissions, I/O, a lost mount or network) is the storage's: reported, nothing moved.
_DAMAGE_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)
# tensorstore's statuses for a storage service (gs://, s3://) that failed or refused, not a bad checkpoint
_STORAGE_STATUSES = ("PERMISSION_DENIED", "UNAUTHENTICATED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


def _abs(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _describe(code: int, path: str | None = None) -> str:
    """`File too large (EFBIG)`, with the path it happened at if known."""
    return f"{os.strerror(code)} ({errno.errorcode.get(code, f'errno {code}')})" + (f" at {path}" if path else "")


def _os_error(error: BaseException | None, reading: bool) -> str | None:
    """The OS-level failure in `error` or what it was raised from (an OSError, a tensorstore error with
    an os_error_code, a storage service's status), in words; None if there is none. reading: leave out
    the errors that mean the checkpoint's own files are missing (damage, not the storage)."""
    while error is not None:
        found = re.search(r"os_error_code='?(\d+)", str(error))
        code = error.errno if isinstance(error, OSError) else int(found.group(1)) if found else None
        if code is not None and not (reading and code in _DAMAGE_ERRNOS):
            return _describe(code, getattr(error, "filename", None))
        if isinstance(error, OSError) and code is None and not reading:
            return str(error)
        if str(error).split(":", 1)[0] in _STORAGE_STATUSES:
            return str(error).split("\n", 1)[0][:300]
        error = error.__cause__ or error.__context__
    return None


def _unopenable(path: str) -> str | None:
    """The OS error met listing a local checkpoint and opening each of its files, if any. After a failed
    read this tells the storage's failure from bad bytes where orbax reported it as something else (an
    unreadable item directory reads back as an item without metadata)."""
    if "://" in path:
        return None

    def fail(error: OSError) -> None:
        raise error

    try:
        for root, _, files in os.walk(path, onerror=fail):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    f.read(1)
    except OSError as e:
        return _describe(e.errno, e.filename) if e.errno else str(e)
    return None


def _attempt(read: Callable[[], Any], where: str) -> tuple[Any, str | None]:
    """(read(), None), or (None, the error's type name) when the checkpoint at `where` is damaged.
    A failure of the storage (see `_os_error`, `_unopenable`) is a UsageError naming it and the path."""
    try:
        return read(), None
    except UsageError:
        raise
    except Exception as e:
        damage, storage = type(e).__name__, _os_error(e, reading=True)
        del e  # it holds the abandoned reads, collected now
    collect_abandoned_reads()
    storage = storage or _unopenable(where)
    if storage:
        raise UsageError(f"checkpoint {where} cannot be read: {storage}: fix the storage (permissions, mount, "
                         "disk) and run again; the checkpoint was left in place")
    return None, damage


def _older_format(found: int, where: str) -> Exception:
    """The one place for a checkpoint older than CHECKPOINT_FORMAT (none exists yet: 1 is the first).
    Bumping the format means deciding here: convert the old layout as it is read, or refuse it."""
    return UsageError(f"checkpoint {where} has format {found}, older than this jaxdl reads ({CHECKPOINT_FORMAT}): "
                      "load it with the jaxdl release that wrote it, or retrain in a new --workdir")


def _loop_of(manager: ocp.CheckpointManager, step: int, where: str) -> dict:
    """The checkpoint's `loop` item, its format checked (a UsageError if this jaxdl cannot read it) and
    removed. Read before the state: a newer format may lay the state out differently."""
    loop = dict(manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))["loop"] or {})
    found = loop.pop("format", 1)  # written before the number was kept: today's layout
    if not isinstance(found, int) or isinstance(found, bool):
        raise ValueError(f"the loop item's format is {found!r}")  # a damaged item, like bad JSON
    if found > CHECKPOINT_FORMAT:
        raise UsageError(f"checkpoint {where} has format {found}, newer than this jaxdl reads "
                         f"({CHECKPOINT_FORMAT}): upgrade jaxdl (pip install -U jaxdl)")
    if found < CHECKPOINT_FORMAT:
        raise _older_format(found, where)
    return loop


def _state_metadata(manager: ocp.CheckpointManager, step: int) -> Any:
    saved = manager.item_metadata(step)["state"]
    if saved is None:  # what orbax makes of an item it cannot list: `_unopenable` says why
        raise FileNotFoundError(errno.ENOENT, "no metadata", f"{manager.directory}/{step}/state")
    return saved


class Checkpoints:
    absolute = staticmethod(lambda path: _abs(path))  # a local path made absolute; a gs:// one as it is

    def __init__(self, directory: str, keep: int = 3, best_metric: str | None = None, best_mode: str = "max"):
        self.directory = _abs(directory)
        quiet_unranked_saves()
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
            where = f"{self.directory}/{step}"
            loop, damage = _attempt(lambda: _loop_of(self.manager, step, where), where)
            if not damage:
                saved, damage = _attempt(lambda: _state_metadata(self.manager, step), where)
            if not damage:
                self._check_shapes(saved, state)
                restored, damage = _attempt(lambda: self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract)))["state"], where)
            if damage:
                unreadable.append((step, damage))
                continue
            self._set_aside(unreadable, step)
            return restored, loop
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
        """Write checkpoint `state.step` (unless it exists); WriteFailed if the storage refuses it."""
        step = step_of(state)
        complete = list(self.manager.all_steps())
        if step in complete:
            return
        quiet_failed_writes()
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                loop=ocp.args.JsonSave({**(loop or {}), "format": CHECKPOINT_FORMAT})), metrics=metrics, force=True)
            return
        except Exception as e:
            problem = _os_error(e, reading=False)
            if problem is None:  # not the storage: a bug, with its traceback
                raise
        self._remove_partial(step)
        then = (f"step {max(complete)} is the newest complete checkpoint: free space or fix the directory, then "
                "run the same command again to resume from it") if complete else (
                "no checkpoint was complete yet: free space or fix the directory, then run the same command again")
        raise WriteFailed(f"cannot save checkpoint {step} to {self.directory}: {problem}; {then}")

    def _remove_partial(self, step: int) -> None:
        """A failed save's temporary directory: never read back, and on a full disk it holds space.
        The save's other writes can still be finishing when its error arrives, and one can land after a
        first removal: wait for the manager, then remove until nothing of it is left (a few tries)."""
        if not is_primary():
            return
        try:
            self.manager.wait_until_finished()
        except Exception:  # the same failure again, or another: the one being reported is the save's
            pass
        for _ in range(PARTIAL_REMOVAL_TRIES):
            try:
                for partial in epath.Path(self.directory).glob(f"{step}.orbax-checkpoint-tmp*"):
                    partial.rmtree()
            except Exception:  # a file written during the walk: the next try takes it
                pass
            time.sleep(PARTIAL_SETTLE_S)
            if not any(epath.Path(self.directory).glob(f"{step}.orbax-checkpoint-tmp*")):
                return

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


def _subtree(saved: Any, subtree: tuple[str, ...]) -> Any:
    tree = getattr(saved, "tree", saved)
    for key in subtree:
        tree = tree[key]
    return tree


def restore_params(directory: str, which: str | int = "best", subtree: tuple[str, ...] = ("params",),
                   best_metric: str | None = None, best_mode: str = "max") -> tuple[Any, int]:
    """(the `subtree` of a saved TrainState, its step), read alone (no optimizer state) onto this
    process's first device, whatever mesh wrote it. `which`: "best" (by `best_metric`, else the
    latest), "latest" or a step number. Missing, unreadable or other-format checkpoints raise UsageError."""
    import absl.logging

    directory = _abs(directory)
    if not epath.Path(directory).exists():
        raise UsageError(f"{directory} does not exist: the run saved no checkpoint there yet")
    quiet_abandoned_reads()
    verbosity = absl.logging.get_verbosity()
    absl.logging.set_verbosity(absl.logging.ERROR)  # orbax warns about read-only use and unrestored items
    manager = None
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
        where = f"{directory}/{step}"
        _, damage = _attempt(lambda: _loop_of(manager, step, where), where)
        if not damage:
            tree, damage = _attempt(lambda: _subtree(_state_metadata(manager, step), subtree), where)
        if not damage:
            here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here), tree)
            for key in reversed(subtree):
                target = {key: target}
            restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=here), target)
            restored, damage = _attempt(lambda: manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)))["state"],
                where)
        if damage:
            raise UsageError(f"checkpoint {where} cannot be read ({damage}): pick another with --checkpoint STEP")
    finally:
        if manager is not None:
            manager.close()
        absl.logging.set_verbosity(verbosity)
    return _subtree(restored, subtree), step
