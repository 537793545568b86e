"""Process-level settings: XLA flags (applied by the experiment and benchmark scripts before jax is
imported), which process writes files (`is_primary`), and this device's measured matmul rate, the
denominator of model FLOPs utilisation.

On XLA:CPU, `--xla_cpu_experimental_ynn_fusion_type=dot` sends dots and the
weight-gradient convolutions through the YNNPACK library instead of Eigen: the
MyNet training step runs about 2x faster with it (benchmarks/cnn_vs_torch.py).
The flag is experimental, so it is only added for jaxlib versions it is known
to exist in (an unknown flag aborts XLA), never twice, and never when
JAXDL_XLA_DEFAULTS=0. It changes summation order only (float32 results agree
to ~1e-6 relative); GPU and TPU backends ignore it.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from importlib import metadata

_CPU_FLAGS = {("0", "10"): ["--xla_cpu_experimental_ynn_fusion_type=dot"]}


def _jaxlib_minor() -> tuple[str, str] | None:
    try:
        return tuple(metadata.version("jaxlib").split(".")[:2])  # type: ignore[return-value]
    except metadata.PackageNotFoundError:
        return None


def configure_xla() -> list[str]:
    """Add the known-good XLA:CPU flags to XLA_FLAGS; returns the flags added (none once jax is imported)."""
    if os.environ.get("JAXDL_XLA_DEFAULTS", "1") == "0" or "jax" in sys.modules:
        return []
    current = os.environ.get("XLA_FLAGS", "")
    added = [f for f in _CPU_FLAGS.get(_jaxlib_minor(), []) if f.split("=")[0] not in current]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def is_primary() -> bool:
    """True in process 0 (or the only process): the one that prints and writes files."""
    if "jax" not in sys.modules:
        return True
    import jax

    return jax.process_index() == 0


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
