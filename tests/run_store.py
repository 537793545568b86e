"""Finished tiny runs, shared by every process of a test session.

The same tiny run (one experiment, one config) is asked for by several tests and pages: the
inference session's runs, the diffusion experiment's tests, and `python experiments/cnn.py` on ten
pages. Training is deterministic, so a second identical run makes the same workdir; `run` trains it
once per session and hands later callers a copy, whichever process they are in (pytest's workers,
the page processes, their bash blocks).

A run is shared only when it is a new run (its workdir absent or empty) of one process, on data
that comes with jaxdl (OFFLINE: not TFDS, which a test may mock), whose config names no file or
folder outside its workdir (a `folder:` or `text:` dataset, --init-from, --checkpoint-dir): what
those hold can differ between callers. The key is the experiment, its whole config less the workdir,
and what else can change the numbers: XLA_FLAGS (each flag's last value, as XLA reads them), the
run-related environment variables, the devices and jax's options (x64, matmul precision, the PRNG,
...). Callers of one key wait for the first to finish (a file lock); a failed run stores nothing,
and a run that cannot be stored (a full disk) is returned all the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import pickle
import shutil
import sys
from typing import Any

STORE = "JAXDL_TEST_RUN_STORE"  # the folder, set for the session by tests/conftest.py
# what in the environment can change a run (also the docs harness's rule for a command's own variables)
ENV_PREFIXES = ("JAXDL_", "XLA_", "JAX_", "TF_", "OMP_", "MKL_", "MALLOC_", "GLIBC_TUNABLES", "TORCH_")
NOT_THE_RUNS = ("JAXDL_TEST_", "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_", "XLA_FLAGS", "JAX_PLATFORMS")
NOT_JAX_OPTIONS = ("cache", "log", "explain", "dump", "timeout", "jax_platforms")  # jax.config's, not the run's
OUTSIDE = ("init_from", "checkpoint_dir", "data_dir", "coordinator", "num_processes")  # other files, processes
OFFLINE = ("digits", "shakespeare")  # the datasets that come with jaxdl (the generated tasks have none)


def run(script: str, argv: list[str]) -> Any:
    """`experiments/<script>.py argv` in this process (what its `main` returns), or a copy of the same
    run finished earlier in the session."""
    main = importlib.import_module(f"experiments.{script}").main
    key, workdir = _key(script, argv)
    if key is None:
        return main(argv)
    folder = os.path.join(os.environ[STORE], key)
    with _locked(folder + ".lock"):
        if os.path.isdir(folder):
            return _copy_out(folder, workdir)
        returned = main(argv)
        try:
            _store(folder, workdir, returned)
        except OSError as e:  # the run itself is fine
            print(f"[run store] {workdir} not stored: {e}", file=sys.stderr)
        return returned


def _key(script: str, argv: list[str]) -> tuple[str | None, str]:
    """(the run's key, its workdir); key None: a run not to share."""
    if not os.environ.get(STORE) or "-h" in argv or "--help" in argv:
        return None, ""
    from jaxdl import cli
    from jaxdl.train import run_config

    try:
        config = cli.parse(importlib.import_module(f"experiments.{script}").Config, argv)
    except (Exception, SystemExit):  # bad input or --help: the run's own call says so
        return None, ""
    workdir = getattr(config, "workdir", None)  # None: not a training run (typed_digits.py)
    if workdir is None or os.path.isdir(workdir) and os.listdir(workdir) or any(getattr(config, f, "") for f in OUTSIDE) \
            or getattr(config, "dataset", OFFLINE[0]) not in OFFLINE:
        return None, ""
    fields = run_config.record(config)["config"]
    fields.pop("workdir")
    for value in fields.values():
        if isinstance(value, str) and value and any(os.path.exists(v) for v in (value, value.partition(":")[2]) if v):
            return None, ""
    try:
        setting = _setting(script, fields)
    except ValueError:
        return None, ""
    return hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:24], workdir


def _setting(script: str, fields: dict[str, Any]) -> dict[str, Any]:
    import jax

    if jax.process_count() > 1:
        raise ValueError("a run of several processes is not shared")
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) and not k.startswith(NOT_THE_RUNS)}
    options = {k: repr(v) for k, v in jax.config.values.items() if not any(w in k for w in NOT_JAX_OPTIONS)}
    flags = dict(f.partition("=")[::2] for f in os.environ.get("XLA_FLAGS", "").split())  # the last value wins
    return {"script": script, "config": fields, "env": env, "xla_flags": sorted(flags.items()),
            "devices": [str(d) for d in jax.devices()], "jax": options}


@contextlib.contextmanager
def _locked(path: str):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _store(folder: str, workdir: str, returned: Any) -> None:
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(workdir, os.path.join(partial, "run"), symlinks=True)
    with open(os.path.join(partial, "returned.pkl"), "wb") as f:
        pickle.dump((workdir, returned), f)
    os.rename(partial, folder)


def _copy_out(folder: str, workdir: str) -> Any:
    """The stored run copied to `workdir`, every config.json in it (the run's own, a judge's, each
    compared model's) naming its place under that workdir, as the run would."""
    from jaxdl.train import run_config

    with open(os.path.join(folder, "returned.pkl"), "rb") as f:
        trained_in, returned = pickle.load(f)
    if os.path.isdir(workdir):
        os.rmdir(workdir)  # empty (_key)
    shutil.copytree(os.path.join(folder, "run"), workdir, symlinks=True)
    for here, _, files in os.walk(workdir):
        if run_config.FILE not in files:
            continue
        path = os.path.join(here, run_config.FILE)
        with open(path) as f:
            saved = json.load(f)
        was = saved.get("config", {}).get("workdir")
        if isinstance(was, str) and (was == trained_in or was.startswith(trained_in + os.sep)):
            saved["config"]["workdir"] = workdir + was[len(trained_in):]
            with open(path, "w") as f:
                json.dump(saved, f, indent=2)
                f.write("\n")
    print(f"[run store] {workdir}: the same run, made earlier in this session", file=sys.stderr)
    return returned
