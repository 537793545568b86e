"""`config.json`: the complete config a run was started with, and the one rule for resuming it.

A run records every field of its config, plus what the config resolved to once the data was known
(the dataset's name, steps per epoch, ...), in its workdir. A rerun that finds a checkpoint compares
them all and refuses any difference, naming the flags, except for fields that declare themselves
harmless with `jaxdl.cli.field(resume=...)`:
- "free": cannot change the result so far (logging and checkpoint cadence, the mesh, the
  checkpoint directory, what is printed or sampled);
- "length": the run's length (--epochs, --steps); a schedule laid out for the old length (cosine)
  is stretched from the resumed step on, which is said in one line.
The record is rewritten with the resumed run's values, so it always says what last trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from jaxdl.errors import UsageError
from jaxdl.runtime import is_primary

FILE = "config.json"
FORMAT = 1  # bumped when a reader of an older config.json would misread a newer one


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # what the value reads back as (tuples become lists, ...)


def record(config: Any, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """What config.json holds for `config` and what it `resolved` to."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return _plain({"format": FORMAT, "config": fields, "resolved": resolved or {}})


def read(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} cannot be read ({type(e).__name__}): restore it or use a new --workdir") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("format"), int) and isinstance(saved.get("config"), dict)
            and isinstance(saved.get("resolved", {}), dict)):
        raise UsageError(f"{path} is not a jaxdl run config: restore it or use a new --workdir")
    if saved["format"] > FORMAT:
        raise UsageError(f"{path} has format {saved['format']}, newer than this jaxdl reads ({FORMAT}): upgrade jaxdl")
    return saved


def differences(saved: dict[str, Any], config: Any, resolved: dict[str, Any] | None = None) -> list[str]:
    """`--flag old -> new` for every field (and resolved value) a resume may not change."""
    old_fields, new = saved["config"], record(config, resolved)
    out = []
    for f in dataclasses.fields(config):
        rule = f.metadata.get("resume", "same")
        value = new["config"][f.name]
        if rule != "same":
            continue
        if f.name not in old_fields:  # a field newer than the run: harmless at its default
            if value != _plain(f.default):
                out.append(f"{_flag(f.name)} {value!r} (the run predates this flag, which means {f.default!r})")
        elif old_fields[f.name] != value:
            out.append(f"{_flag(f.name)} {old_fields[f.name]!r} -> {value!r}")
    names = {f.name for f in dataclasses.fields(config)}
    out += [f"{_flag(name)} {old_fields[name]!r} -> not a flag of this script" for name in old_fields if name not in names]
    old_resolved = saved.get("resolved", {})
    out += [f"{key} {old_resolved[key]!r} -> {value!r}" for key, value in new["resolved"].items()
            if key in old_resolved and old_resolved[key] != value]
    return out


def length_notes(saved: dict[str, Any], config: Any) -> list[str]:
    """One line per changed "length" field whose learning-rate schedule depends on the run's length."""
    flag, schedule = config.lr_schedule_flag() if hasattr(config, "lr_schedule_flag") else ("", "constant")
    if schedule == "constant":
        return []
    notes = []
    for f in dataclasses.fields(config):
        old = saved["config"].get(f.name)
        if f.metadata.get("resume") == "length" and old is not None and old != getattr(config, f.name):
            notes.append(f"note: {_flag(f.name)} {old} -> {getattr(config, f.name)}: the {schedule} learning-rate "
                         f"schedule ({flag}) now spans the new length from the resumed step on")
    return notes


def check(workdir: str, config: Any, resolved: dict[str, Any] | None = None) -> list[str]:
    """Refuse to resume `workdir` with a config that differs where it may not (UsageError naming the
    flags); returns the notes to print. A workdir without config.json (a new run, or one written
    before runs recorded their config) passes."""
    saved = read(workdir)
    if saved is None:
        return []
    diff = differences(saved, config, resolved)
    if diff:
        more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
        raise UsageError(f"--workdir {workdir} was trained with other settings: {'; '.join(diff[:4])}{more}. Rerun "
                         f"with the run's own settings (see {os.path.join(workdir, FILE)}), or use a new --workdir "
                         "(--init-from to start from this run)")
    return length_notes(saved, config)


def write(workdir: str, config: Any, resolved: dict[str, Any] | None = None) -> None:
    """Write config.json atomically (process 0 only)."""
    if not is_primary():
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(record(config, resolved), f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
