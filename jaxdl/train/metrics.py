"""metrics.jsonl (one JSON object per event) and summary.json (final figures)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jaxdl.runtime import allocator_settings, cpu_description, is_primary, malloc_environment, xla_flags


def _plain(v: Any) -> Any:
    if isinstance(v, (np.generic, np.ndarray)):
        return v.tolist()
    return v


class MetricsLog:
    def __init__(self, workdir: str):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")

    def drop_after(self, step: int) -> None:
        """Forget the events past `step` (written by a run that died before its next checkpoint),
        and a last line cut short by a kill."""
        if not is_primary() or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = f.readlines()
        kept = [line for line in lines if _parses(line) and json.loads(line).get("step", 0) <= step]
        if len(kept) < len(lines):
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)

    def write(self, **event: Any) -> None:
        if not is_primary():
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _plain(v) for k, v in event.items()}) + "\n")


def _parses(line: str) -> bool:
    try:
        return line.endswith("\n") and isinstance(json.loads(line), dict)
    except ValueError:
        return False


def read_events(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_summary(workdir: str, summary: dict[str, Any]) -> str:
    """Write summary.json atomically (a crash never leaves half a file).

    Adds `xla_flags`, the XLA flags in force, `malloc`, the allocator settings jaxdl applied, and
    `malloc_environment`, glibc's own settings from the environment (GLIBC_TUNABLES, MALLOC_*). A figure this invocation could not measure (None, e.g. throughput when a finished run is
    rerun and trains nothing) keeps the value an earlier invocation wrote.
    """
    path = os.path.join(workdir, "summary.json")
    if not is_primary():
        return path
    # the flags and allocator settings this process ran with (jaxdl/runtime.py)
    summary = {**summary, "xla_flags": xla_flags(), "malloc": allocator_settings(), "malloc_environment": malloc_environment()}
    if os.path.exists(path):
        with open(path) as f:
            earlier = json.load(f)
        summary = {k: earlier.get(k) if v is None else v for k, v in summary.items()}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({k: _plain(v) for k, v in summary.items()}, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def format_metrics(metrics: dict[str, Any], prefix: str = "") -> str:
    """`loss = 0.1234 | accuracy = 97.50%`; per-model arrays as mean±std over the models."""
    parts = []
    for k, v in sorted(metrics.items(), key=lambda kv: "loss" not in kv[0]):  # loss first, then as given
        if isinstance(v, str) or not np.issubdtype(np.asarray(v).dtype, np.number):
            continue
        v = np.asarray(v, np.float64)
        scale, unit = (100, "%") if "accuracy" in k else (1, "")
        num = lambda x: f"{x:.2f}" if unit else (f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.3e}")
        text = f"{num(scale * v.mean())}{unit}"
        if v.ndim:
            text = f"{num(scale * v.mean())}±{num(scale * v.std())}{unit} over {v.size} models"
        parts.append(f"{prefix}{k} = {text}")
    return " | ".join(parts)


def device_description() -> str:
    import jax

    d = jax.devices()[0]
    kind = d.device_kind if d.platform != "cpu" else f"{cpu_description()}; {os.cpu_count()} cores"
    return f"{d.platform} ({kind}, {jax.device_count()} device{'s' if jax.device_count() > 1 else ''})"
