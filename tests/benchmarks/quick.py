"""Running a benchmark script as a user does, for the tests: `python benchmarks/NAME.py ARGS` in a
subprocess from the repository root, on the CPU, with XLA:CPU's backend optimisation off (it halves
compile times, the bulk of a --quick run; what a --quick figure measures does not matter)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HANG = 900  # seconds: only a hung script gets near this


def quick_env(cache_dir: str | None = None) -> dict[str, str]:
    """os.environ for the scripts; `cache_dir`: an XLA compilation cache the scripts share."""
    xla_flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0") if f)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags}
    if cache_dir:
        env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def run(script: str, argv, env=None) -> subprocess.CompletedProcess:
    """`python benchmarks/<script> argv` (text output captured)."""
    return subprocess.run([sys.executable, os.path.join("benchmarks", script), *argv], cwd=ROOT,
                          env=env or quick_env(), capture_output=True, text=True, timeout=HANG)


def run_ok(script: str, argv, env=None) -> str:
    """`run`, which must exit 0 without a traceback; returns its stdout."""
    done = run(script, argv, env)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout
