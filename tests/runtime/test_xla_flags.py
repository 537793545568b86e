"""XLA:CPU flags chosen by what the installed jaxlib accepts, not by its version: a flag XLA knows is
taken, one it does not know (which would abort XLA) is left out, the answer is probed once per jaxlib
build and then read from the cache, and summary.json says which flags a run had."""

import json
import os
import subprocess
import sys

import pytest

from jaxdl import allocator, runtime
from jaxdl.train.metrics import write_summary

KNOWN = "--xla_dump_hlo_as_text=false"  # an XLA debug option every jaxlib has
UNKNOWN = "--xla_cpu_no_such_option_in_any_jaxlib=true"


def test_a_known_flag_is_accepted_and_an_unknown_one_is_not():
    assert runtime.accepts(KNOWN)
    assert not runtime.accepts(UNKNOWN)


def test_probed_once_per_jaxlib_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(runtime, "CPU_FLAGS", [KNOWN, UNKNOWN])
    assert runtime.supported_cpu_flags() == [KNOWN]
    cache = json.loads((tmp_path / "jaxdl" / "xla_cpu_flags.json").read_text())
    assert list(cache.values()) == [{KNOWN: True, UNKNOWN: False}]

    def probe(flag, timeout=0):
        raise AssertionError("probed again")

    monkeypatch.setattr(runtime, "accepts", probe)
    assert runtime.supported_cpu_flags() == [KNOWN]
    # other candidates (the tests' own flags): only the new one is probed, and it joins the cache
    other, probed = "--xla_dump_hlo_as_proto=false", []
    monkeypatch.setattr(runtime, "accepts", lambda flag, timeout=0: probed.append(flag) or True)
    assert runtime.supported_cpu_flags([UNKNOWN, other, KNOWN]) == [other, KNOWN] and probed == [other]
    cache = json.loads((tmp_path / "jaxdl" / "xla_cpu_flags.json").read_text())
    assert list(cache.values()) == [{KNOWN: True, UNKNOWN: False, other: True}]


def configure_in_a_fresh_process(env):
    """configure_xla() where jax is not yet imported: (flags added, XLA_FLAGS after)."""
    code = "from jaxdl import runtime; print(runtime.configure_xla()); print(runtime.xla_flags())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr
    added, flags = done.stdout.splitlines()
    return added, flags


@pytest.fixture
def env(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("XLA_FLAGS", None)
    env.pop("JAXDL_XLA_DEFAULTS", None)
    return env


def test_configure_adds_what_jaxlib_accepts_once(env, tmp_path):
    supported = runtime.supported_cpu_flags()
    added, flags = configure_in_a_fresh_process(env)
    assert added == repr(supported) and flags == " ".join(supported)
    env["XLA_FLAGS"] = " ".join(supported)  # already there: not added twice
    assert configure_in_a_fresh_process(env) == ("[]", " ".join(supported))
    env["JAXDL_XLA_DEFAULTS"] = "0"
    env["XLA_FLAGS"] = ""
    assert configure_in_a_fresh_process(env) == ("[]", "")


def test_summary_records_the_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", KNOWN)
    monkeypatch.setattr(allocator, "_allocator", {"M_TOP_PAD": 1 << 26})
    for name in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    write_summary(str(tmp_path), {"steps": 1})
    assert json.loads((tmp_path / "summary.json").read_text()) == {
        "steps": 1, "xla_flags": KNOWN, "malloc": {"M_TOP_PAD": 1 << 26},
        "malloc_environment": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}}
