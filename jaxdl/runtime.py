"""Process-level settings: XLA flags and the C allocator's (`configure()`, called by the experiment
and benchmark scripts before jax is imported), which process writes files (`is_primary`), and this
device's measured matmul rate, the denominator of model FLOPs utilisation.

On XLA:CPU, `--xla_cpu_experimental_ynn_fusion_type=dot` sends dots and the
weight-gradient convolutions through the YNNPACK library instead of Eigen: the
MyNet training step runs about 2x faster with it (benchmarks/cnn_vs_torch.py).
The flag is experimental and an XLA that does not know a flag aborts, so each
candidate is added only where the installed jaxlib accepts it: checked once in
a subprocess per jaxlib build and remembered in ~/.cache/jaxdl/xla_cpu_flags.json
($XDG_CACHE_HOME), never added twice, and never when JAXDL_XLA_DEFAULTS=0. It changes
summation order only (float32 results agree to ~1e-6 relative); GPU and TPU
backends ignore it. `xla_flags()` says which flags are in force (summary.json).

The C allocator's settings are jaxdl/allocator.py's (`configure()` applies them first).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata

from jaxdl.allocator import (MALLOC_SETTINGS, allocator_settings, configure_allocator,  # noqa: F401 (re-exported)
                             malloc_environment, relaunch_with_huge_pages)

CPU_FLAGS = ["--xla_cpu_experimental_ynn_fusion_type=dot"]  # candidates, each added where jaxlib accepts it
_PROBE = "import jax, jax.numpy as jnp; jax.jit(lambda x: x @ x)(jnp.ones((8, 8))).block_until_ready()"


def _jaxlib_build() -> str | None:
    """The installed jaxlib: its version and where it lives (two venvs may hold different builds)."""
    try:
        dist = metadata.distribution("jaxlib")
    except metadata.PackageNotFoundError:
        return None
    return f"{dist.version} {dist.locate_file('')}"


def cache_dir() -> str:
    """jaxdl's own cache folder ($XDG_CACHE_HOME/jaxdl, else ~/.cache/jaxdl): what is worked out once
    per machine and reused (the XLA flags a jaxlib accepts, the digits split)."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(home, "jaxdl")


def _cache_file() -> str:
    return os.path.join(cache_dir(), "xla_cpu_flags.json")


def accepts(flag: str, timeout: float = 120.0) -> bool:
    """Whether this Python's jaxlib runs a jitted program with `flag` in XLA_FLAGS (a subprocess: an
    unknown flag aborts the process that reads it)."""
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def supported_cpu_flags(candidates: list[str] | None = None) -> list[str]:
    """The `candidates` (default CPU_FLAGS) this jaxlib accepts: each probed once per jaxlib build,
    then read from the cache file."""
    candidates = CPU_FLAGS if candidates is None else candidates
    build = _jaxlib_build()
    if build is None:
        return []
    path = _cache_file()
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    known = cache.get(build, {})
    known = known if isinstance(known, dict) else {}
    missing = [flag for flag in candidates if flag not in known]
    if missing:
        known = {**known, **{flag: accepts(flag) for flag in missing}}
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(f"{path}.{os.getpid()}", "w") as f:
                json.dump({**cache, build: known}, f, indent=1)
            os.replace(f"{path}.{os.getpid()}", path)
        except OSError:  # a read-only home: probe again next time
            pass
    return [flag for flag in candidates if known.get(flag) is True]


def configure(script: str | None = None) -> list[str]:
    """Everything a jaxdl process sets before importing jax: the allocator, then the XLA flags
    (returned: the flags added). A script passes its own file (`configure(__file__)`, before it does
    anything else): where Python was started to run it, it may first start again in place with
    transparent huge pages (jaxdl/allocator.py)."""
    if script is not None:
        relaunch_with_huge_pages(script)
    configure_allocator()
    return configure_xla()


def configure_xla() -> list[str]:
    """Add the XLA:CPU flags this jaxlib accepts to XLA_FLAGS; returns the flags added (none once jax
    is imported)."""
    if os.environ.get("JAXDL_XLA_DEFAULTS", "1") == "0" or "jax" in sys.modules:
        return []
    return add_xla_flags(supported_cpu_flags())


def add_xla_flags(flags: list[str]) -> list[str]:
    """Append to XLA_FLAGS those of `flags` it does not set already (by name); returns those appended.
    XLA reads XLA_FLAGS when its first backend starts."""
    current = os.environ.get("XLA_FLAGS", "")
    added = [f for f in flags if f.split("=")[0] not in current]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def xla_flags() -> str:
    """The XLA flags in force in this process (as XLA read them from the environment)."""
    return os.environ.get("XLA_FLAGS", "")


# the instruction sets that decide XLA:CPU's and oneDNN's kernels, as /proc/cpuinfo names them
ISA_NAMES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_tile": "AMX"}


def cpu_description(cpuinfo: str | None = None) -> str:
    """This machine's CPU as speed figures need it: `AMD EPYC, AMD family 26 model 2, AVX2/AVX-512/AVX512-BF16`.

    Ratios measured on one CPU say little about another (the same LSTM comparison gave 0.50x on one
    2-core AMD EPYC and 0.71x on another), and a cloud CPU's model name often hides its generation;
    the family and model numbers do not. From /proc/cpuinfo (`cpuinfo`: its text), else the
    platform's processor name."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    first = cpuinfo.strip().split("\n\n")[0]
    fields = {}
    for line in first.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}.get(fields.get("vendor_id", ""), fields.get("vendor_id", ""))
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append(f"{vendor} family {fields['cpu family']} model {fields['model']}".strip())
    flags = set(fields.get("flags", "").split())
    isa = [label for flag, label in ISA_NAMES.items() if flag in flags]
    if isa:
        details.append("/".join(isa))
    return ", ".join([name, *details])


def is_primary() -> bool:
    """True in process 0 (or the only process): the one that prints and writes files."""
    if "jax" not in sys.modules:
        return True
    import jax

    return jax.process_index() == 0


def local_share(rows: int) -> slice:
    """This process's rows of a global batch of `rows` (contiguous, in process order)."""
    import jax

    share = rows // jax.process_count()
    return slice(jax.process_index() * share, (jax.process_index() + 1) * share)


@functools.lru_cache(maxsize=None)
def matmul_peak_gflops(n: int = 1024, repeats: int = 10, dtype: str = "float32") -> float:
    """GFLOP/s of a jitted n x n matmul on the default device (default precision: TF32 on recent
    NVIDIA GPUs for float32), best of three timings of `repeats` back-to-back calls."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            c = dot(a, b)
        c.block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 * repeats / best / 1e9
