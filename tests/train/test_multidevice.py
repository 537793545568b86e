"""Runs test_sharding.py in a process of 8 CPU devices (the device count is fixed when jax starts, and
this process has one): its tests must all run and pass there."""

import os
import re
import subprocess
import sys

from tests.conftest import multi_device_xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_sharding_tests_pass_on_8_devices():
    env = {**os.environ, "XLA_FLAGS": multi_device_xla_flags(8)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/train/test_sharding.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\b10 passed\b", summary) and "skipped" not in summary, summary
