"""jaxdl.runtime.configure_allocator: a freed block of working memory stays in the process, so
taking it again costs no page faults (what XLA:CPU does with each step's temporaries)."""

import json
import os
import subprocess
import sys

import pytest

from jaxdl import allocator

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


def test_the_environments_own_malloc_settings_win_and_the_others_still_apply():
    from jaxdl.runtime import MALLOC_SETTINGS

    ours = {name: value for name, (_, value) in MALLOC_SETTINGS.items()}
    without = lambda *names: {k: v for k, v in ours.items() if k not in names}
    assert run(MALLOC_TOP_PAD_=str(MB))["applied"] == without("M_TOP_PAD")
    assert run(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1048576")["applied"] == without("M_TRIM_THRESHOLD")
    both = run(GLIBC_TUNABLES="glibc.malloc.mmap_threshold=1048576:glibc.malloc.top_pad=0")
    assert both["applied"] == without("M_MMAP_THRESHOLD", "M_TOP_PAD")
    # a tunable of another parameter (transparent huge pages) leaves every setting of ours in force
    huge = run(GLIBC_TUNABLES="glibc.malloc.hugetlb=1")
    assert huge["applied"] == ours and huge["faults"] < 100 * MB // os.sysconf("SC_PAGE_SIZE") // 20
    # the environment's 1 MB mmap threshold is in force: the 100 MB block is mapped afresh
    assert both["faults"] > 100 * MB // os.sysconf("SC_PAGE_SIZE") // 2


# a script that sets up its process as the experiments do, then says what it runs with
SCRIPT = """
import json, os, sys
from jaxdl import runtime
runtime.configure(__file__)
print(json.dumps({"pid": os.getpid(), "argv": sys.argv, "utf8": sys.flags.utf8_mode, "tunables": os.environ.get("GLIBC_TUNABLES"),
                  "applied": runtime.allocator_settings()}))
"""


def run_script(tmp_path, *python_options, **env_changes):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop("JAXDL_MALLOC_DEFAULTS", None)
    env.update(env_changes, PYTHONPATH=ROOT)
    # the script prints the pid of the process that runs it; the launcher prints the pid it started
    launcher = ("import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); print(p.pid, flush=True); "
                "sys.exit(p.wait())")
    done = subprocess.run([sys.executable, "-c", launcher, sys.executable, *python_options, str(script), "--steps", "3"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    started, report = done.stdout.splitlines()
    return int(started), json.loads(report)


relaunches = pytest.mark.skipif(not (allocator.glibc_version() or (0, 0)) >= (2, 35)
                                or not allocator.huge_pages_on_request(),
                                reason="glibc >= 2.35 and the kernel's transparent huge pages in madvise mode")


@relaunches
def test_a_script_runs_again_in_place_with_huge_pages(tmp_path):
    started, report = run_script(tmp_path, "-X", "utf8")
    assert report["pid"] == started  # the same process, its program started again
    assert report["argv"][1:] == ["--steps", "3"] and report["utf8"] == 1  # arguments and Python's options kept
    assert report["tunables"] == allocator.HUGE_PAGES
    assert report["applied"] == {name: value for name, (_, value) in allocator.MALLOC_SETTINGS.items()}
    # the environment's own tunables are kept, and the relaunch happens once
    _, report = run_script(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_test=8")
    assert report["tunables"] == f"glibc.malloc.arena_test=8:{allocator.HUGE_PAGES}"


@relaunches
def test_no_relaunch_where_the_environment_decides(tmp_path):
    assert run_script(tmp_path, JAXDL_MALLOC_DEFAULTS="0")[1]["tunables"] is None
    assert run_script(tmp_path, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")[1]["tunables"] == "glibc.malloc.hugetlb=0"


def test_only_a_program_started_as_a_script_is_started_again(tmp_path, monkeypatch):
    script, other = tmp_path / "train.py", tmp_path / "other.py"
    script.write_text("")
    other.write_text("")
    monkeypatch.setattr(sys, "argv", [str(script), "--steps", "3"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-X", "utf8", str(script), "--steps", "3"])
    assert allocator.started_as_script(str(script))
    assert not allocator.started_as_script(str(other))  # a module the script imports or runs
    for orig in (["python", "-m", "pytest", "tests"],  # a script run from another program (a test, IPython's %run)
                 ["python", "-c", "code", "--steps", "3"],
                 ["python", str(script), "--steps", "4"]):
        monkeypatch.setattr(sys, "orig_argv", orig)
        assert not allocator.started_as_script(str(script))
    monkeypatch.setattr(sys, "orig_argv", ["python", "-c", "code", "--steps", "3"])
    monkeypatch.setattr(sys, "argv", ["-c", "--steps", "3"])
    assert not allocator.started_as_script(str(script))
    allocator.relaunch_with_huge_pages(str(script))  # returns: this process goes on


@relaunches
def test_jaxdl_train_runs_again_in_place_with_huge_pages(tmp_path):
    # the installed console script calls jaxdl.commands.console; here `main` only reports
    script = tmp_path / "jaxdl"
    script.write_text("import json, os, sys\nfrom jaxdl import commands\n"
                      "commands.main = lambda: print(json.dumps({'tunables': os.environ.get('GLIBC_TUNABLES'), "
                      "'argv': sys.argv[1:]}))\ncommands.console()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop("JAXDL_MALLOC_DEFAULTS", None)
    def command(*argv):
        done = subprocess.run([sys.executable, str(script), *argv], env={**env, "PYTHONPATH": ROOT},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert command("train", "cnn", "--epochs", "1") == {"tunables": allocator.HUGE_PAGES,
                                                        "argv": ["train", "cnn", "--epochs", "1"]}
    assert command("info", "runs/cnn") == {"tunables": None, "argv": ["info", "runs/cnn"]}  # a short command


@relaunches
def test_a_relaunch_that_cannot_start_goes_on_without_huge_pages(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import os, sys\nsys.executable = os.path.join(os.path.dirname(__file__), 'no-python')\n"
                      "from jaxdl import runtime\nruntime.configure(__file__)\nprint(os.environ.get('GLIBC_TUNABLES'))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop("JAXDL_MALLOC_DEFAULTS", None)
    done = subprocess.run([sys.executable, str(script)], env={**env, "PYTHONPATH": ROOT},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.strip() == "None"
