"""Shared test setup: the repo root on sys.path (for experiments/ and benchmarks/), and a persistent XLA
compilation cache for this session, so a program compiled once (the same model built again by another
test or experiment run) is not compiled again: XLA:CPU compiles are the bulk of the suite's time."""

import atexit
import os
import shutil
import sys
import tempfile

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

_CACHE = tempfile.mkdtemp(prefix="jaxdl-test-xla-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
