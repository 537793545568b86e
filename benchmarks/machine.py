"""What every side-by-side benchmark shares: CPU pinning, the machine line, the JSON figures."""

from __future__ import annotations

import json
import os
import platform
import sys


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pin_threads(n: int) -> None:
    """Restrict the process to n cores (0: all): XLA's CPU thread pool sizes itself from the affinity."""
    if n <= 0 or n >= available_cpus() or not hasattr(os, "sched_setaffinity"):
        return
    if "jax" in sys.modules:
        print(f"note: jax was imported before --threads {n} took effect; XLA may use more threads")
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])


def versions() -> dict[str, str]:
    import jax
    import jaxlib
    import torch

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def describe(xla_flags: list[str]) -> dict:
    """Print the XLA flags, versions and CPUs; return them for the JSON figures."""
    import torch

    v, cpus = versions(), available_cpus()
    print(f"XLA flags added by jaxdl.runtime: {' '.join(xla_flags) or 'none'} (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})")
    print("machine: " + ", ".join(f"{k} {x}" for k, x in v.items())
          + f"; CPUs: {cpus} in use, {os.cpu_count()} on the machine ({platform.processor() or platform.machine()}); "
          f"torch threads {torch.get_num_threads()}")
    return {"versions": v, "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpus_in_use": cpus, "cpu_count": os.cpu_count()}


def write_json(path: str | None, figures: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=2)
        print(f"wrote {path}")
