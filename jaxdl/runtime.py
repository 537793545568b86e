"""Process-level XLA settings, applied by the experiment and benchmark scripts before jax is imported.

On XLA:CPU, `--xla_cpu_experimental_ynn_fusion_type=dot` sends dots and the
weight-gradient convolutions through the YNNPACK library instead of Eigen: the
MyNet training step runs about 2x faster with it (benchmarks/cnn_vs_torch.py).
The flag is experimental, so it is only added for jaxlib versions it is known
to exist in (an unknown flag aborts XLA), never twice, and never when
JAXDL_XLA_DEFAULTS=0. It changes summation order only (float32 results agree
to ~1e-6 relative); GPU and TPU backends ignore it.
"""

from __future__ import annotations

import os
import sys
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
