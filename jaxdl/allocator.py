"""The C allocator under XLA:CPU (glibc only), set up before jax is imported by `jaxdl.runtime.configure()`.

XLA:CPU allocates each step's temporaries (activations, gradients: tens to hundreds of MB) with
malloc and frees them at the step's end. glibc serves a block that large with mmap and returns it to
the kernel on free, so every step page-faults its whole working set back in: ~12,000 faults and a
fifth of the GPT step of benchmarks/lm_vs_torch.py on a 2-core VM. `configure_allocator()` keeps
such blocks on the heap and the freed memory in the process (`mallopt`; MALLOC_SETTINGS). The cost:
the process keeps its peak heap (up to M_TRIM_THRESHOLD of it free) instead of returning it.

That covers the blocks the main thread takes. JAX runs a computation on a worker thread, whose glibc
arena grows in heaps of at most 64 MB, and glibc maps any larger block afresh whatever the settings
(the LSTM language model's step: one ~64 MB block, ~17,000 faults a step; MyNet's, more). glibc
≥ 2.35 can back its memory with transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`),
2 MB at a time instead of 4 KB, which takes those faults down to about a hundred a step. glibc reads
tunables only when a process starts, so `relaunch_with_huge_pages(script)` (from
`jaxdl.runtime.configure(__file__)` at the top of a script, and `jaxdl train`) starts the program
again in place (`os.execve`: the same process id, arguments and environment, plus that tunable) when
Python was started to run that very script, the kernel gives huge pages on request (`madvise` mode)
and the environment does not choose otherwise. It costs a process about half a second (the kernel
zeroes 2 MB pages), which a training run of more than a few seconds wins back.

JAXDL_MALLOC_DEFAULTS=0 turns both off; a parameter the environment sets itself (MALLOC_TOP_PAD_=...,
GLIBC_TUNABLES=glibc.malloc.top_pad=..., glibc.malloc.hugetlb=0) keeps the environment's value, and
the others are still set. `allocator_settings()` says what was set and `malloc_environment()` what
the environment set (both in summary.json).
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h) and the values set: blocks up to 512 MB come from the heap,
# up to 1 GB of freed heap stays in the process, and the heap grows 64 MB beyond each request
MALLOC_SETTINGS = {"M_MMAP_THRESHOLD": (-3, 512 << 20), "M_TRIM_THRESHOLD": (-1, 1 << 30), "M_TOP_PAD": (-2, 64 << 20)}
HUGE_PAGES = "glibc.malloc.hugetlb=1"  # malloc's memory madvise'd MADV_HUGEPAGE (glibc >= 2.35)
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"
_allocator: dict[str, int] = {}


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library if it is glibc, else None."""
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, OSError, ValueError):  # not glibc (macOS, musl, Windows)
        return None


def _turned_off() -> bool:
    return os.environ.get("JAXDL_MALLOC_DEFAULTS", "1") == "0"


def _tunables() -> list[str]:
    return [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]


def set_by_environment(name: str) -> bool:
    """Whether the environment sets the malloc parameter `name` ("M_TOP_PAD", "HUGETLB") itself:
    glibc's MALLOC_TOP_PAD_ variable or glibc.malloc.top_pad in GLIBC_TUNABLES."""
    short = name.removeprefix("M_")
    return f"MALLOC_{short}_" in os.environ or any(t.split("=")[0] == f"glibc.malloc.{short.lower()}" for t in _tunables())


def configure_allocator() -> dict[str, int]:
    """Apply MALLOC_SETTINGS with glibc's mallopt, once; returns those applied (glibc refuses a value
    it does not allow). Nothing on other C libraries or with JAXDL_MALLOC_DEFAULTS=0; a parameter
    the environment sets itself keeps the environment's value."""
    if _allocator:
        return dict(_allocator)
    if _turned_off() or glibc_version() is None:
        return {}
    mallopt = ctypes.CDLL(None).mallopt
    for name, (param, value) in MALLOC_SETTINGS.items():
        if not set_by_environment(name) and mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            _allocator[name] = value
    return dict(_allocator)


def allocator_settings() -> dict[str, int]:
    """The mallopt settings `configure_allocator` applied in this process ({} if none)."""
    return dict(_allocator)


def malloc_environment() -> dict[str, str]:
    """glibc's own malloc settings in this process's environment (MALLOC_* variables, GLIBC_TUNABLES)."""
    return {k: v for k, v in sorted(os.environ.items()) if k == "GLIBC_TUNABLES" or k.startswith("MALLOC_")}


def started_as_script(script: str) -> bool:
    """Whether Python was started to run `script` with sys.argv's arguments (`python [options] SCRIPT
    ARGS`: not -c, -m, an interactive session, or another program that imported or ran `script`)."""
    argv, orig = sys.argv, getattr(sys, "orig_argv", [])
    if not argv or not argv[0] or len(orig) <= len(argv) or orig[len(orig) - len(argv):][1:] != argv[1:]:
        return False
    started = orig[len(orig) - len(argv)]
    return os.path.isfile(started) and os.path.realpath(started) == os.path.realpath(argv[0]) == os.path.realpath(script)


def huge_pages_on_request() -> bool:
    """Whether the kernel backs memory with transparent huge pages where a program asks (`madvise`
    mode; under `always` it does so for every program already, under `never` for none)."""
    try:
        with open(THP_MODE) as f:
            return "[madvise]" in f.read()
    except OSError:
        return False


def relaunch_with_huge_pages(script: str) -> None:
    """Start this program again in place with GLIBC_TUNABLES+=glibc.malloc.hugetlb=1 (module
    docstring), where that helps and is safe: Python was started to run `script` (the caller's own
    file, before it has done anything that cannot be done twice), glibc >= 2.35, the kernel's
    `madvise` mode, no JAXDL_MALLOC_DEFAULTS=0, no hugetlb tunable of the environment's own and jax
    not imported yet. Otherwise, or where the exec fails, returns."""
    version = glibc_version()
    if (_turned_off() or not sys.executable or version is None or version < (2, 35)
            or set_by_environment("HUGETLB") or "jax" in sys.modules or not started_as_script(script)
            or not huge_pages_on_request()):
        return
    env = {**os.environ, "GLIBC_TUNABLES": ":".join([*_tunables(), HUGE_PAGES])}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:  # the interpreter cannot be started again: go on without huge pages
        return
