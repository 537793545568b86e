"""What every benchmark script shares: the parser (bad flags: one `error:` line, exit status 2, through
`jaxdl.cli.run`), `--quick`, the torch check, CPU pinning, the machine line, the JSON figures."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import typing

from jaxdl.errors import UsageError


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse would print the usage too, and exit 2 itself
        raise UsageError(f"{message} (see --help)")


def make_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose --help shows a script's docstring as it is written; its errors (and `p.error`)
    raise UsageError, which `jaxdl.cli.run` prints as one line."""
    return _OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)


def parse_quick(p: argparse.ArgumentParser, argv, quick: dict) -> argparse.Namespace:
    """Parse argv; with --quick, `quick` (dest -> value) replaces those defaults, so flags given
    explicitly still win (parsing twice is how argparse tells the two apart)."""
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(**quick)
        args = p.parse_args(argv)
    return args


def require_torch() -> None:
    """Stop with one line (exit status 2) where PyTorch is not installed; without importing it, so
    that `pin_threads` still comes first."""
    if importlib.util.find_spec("torch") is None:
        raise UsageError("this benchmark compares against PyTorch, which is not installed: "
                         "pip install torch (the CPU build is enough)")


def check_positive(p: argparse.ArgumentParser, args: argparse.Namespace, names) -> None:
    """Stop with a usage error unless every flag in `names` (attribute names) is at least 1."""
    for name in names:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")


def load_average() -> float:
    """The 1-minute load average (nan where the OS has none): how busy the machine is with other work."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


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
    """Print the XLA flags, allocator settings, versions and CPUs; return them for the JSON figures."""
    import torch

    from jaxdl.runtime import allocator_settings, cpu_description, malloc_environment

    v, cpus = versions(), available_cpus()
    print(f"XLA flags added by jaxdl.runtime: {' '.join(xla_flags) or 'none'} (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})")
    malloc = allocator_settings()
    print("malloc settings applied by jaxdl.runtime (both frameworks run with them): "
          + (", ".join(f"{k}={x >> 20} MB" for k, x in malloc.items()) or "none"))
    if malloc_environment():
        print("glibc's malloc settings from the environment: " + " ".join(f"{k}={x}" for k, x in malloc_environment().items()))
    print("machine: " + ", ".join(f"{k} {x}" for k, x in v.items())
          + f"; CPUs: {cpus} in use, {os.cpu_count()} on the machine; torch threads {torch.get_num_threads()}")
    cpu = cpu_description()
    print(f"CPU: {cpu}")
    return {"versions": v, "xla_flags": os.environ.get("XLA_FLAGS", ""), "malloc": malloc,
            "malloc_environment": malloc_environment(), "cpus_in_use": cpus,
            "cpu_count": os.cpu_count(), "cpu": cpu}


def write_json(path: str | None, figures: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=2)
        print(f"wrote {path}")
