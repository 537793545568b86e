"""jaxdl.runtime.configure_allocator: a freed block of working memory stays in the process, so
taking it again costs no page faults (what XLA:CPU does with each step's temporaries)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MB = 1 << 20
# a 100 MB block taken, written, freed, then taken and written again: the second time's page faults
CODE = """
import ctypes, json, resource
from jaxdl import runtime
applied = runtime.configure_allocator()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 100 << 20
def use_a_block():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
use_a_block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
use_a_block()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

pytestmark = pytest.mark.skipif(sys.platform != "linux" or not os.confstr("CS_GNU_LIBC_VERSION"),
                                reason="mallopt is glibc's")


def run(**env_changes):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop("JAXDL_MALLOC_DEFAULTS", None)
    env.update(env_changes)
    done = subprocess.run([sys.executable, "-c", CODE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_freed_block_is_reused_without_page_faults():
    from jaxdl.runtime import MALLOC_SETTINGS

    tuned = run()
    assert tuned["applied"] == {name: value for name, (_, value) in MALLOC_SETTINGS.items()}
    untuned = run(JAXDL_MALLOC_DEFAULTS="0")
    assert untuned["applied"] == {}
    pages = 100 * MB // os.sysconf("SC_PAGE_SIZE")
    assert untuned["faults"] > pages // 2  # glibc mapped the block afresh: every page faulted again
    assert tuned["faults"] < pages // 20  # the heap kept it


def test_the_environments_own_malloc_settings_win():
    assert run(MALLOC_TOP_PAD_=str(MB))["applied"] == {}
    assert run(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1048576")["applied"] == {}
