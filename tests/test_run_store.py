"""tests/run_store.py: a run is trained once per session and copied to later callers, only when the
copy is what a new run would have made."""

import json

import jax
import pytest

from experiments import mlp
from tests import run_store

XOR = ["--task", "xor", "--epochs", "2"]


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """A fresh store; the list of argvs mlp.main actually trained."""
    monkeypatch.setenv(run_store.STORE, str(tmp_path / "store"))
    (tmp_path / "store").mkdir()
    calls, real = [], mlp.main

    def main(argv):
        calls.append(list(argv))
        return real(argv)

    monkeypatch.setattr(mlp, "main", main)
    return calls


def comparable(workdir):
    summary = json.loads((workdir / "summary.json").read_text())
    timings = [k for k in summary if k.endswith(("_seconds", "_per_sec", "mfu", "peak_gflops"))]
    return {k: v for k, v in summary.items() if k not in timings}


def test_the_same_run_is_trained_once_and_the_copy_is_the_run(counted, tmp_path, monkeypatch):
    first = run_store.run("mlp", [*XOR, "--workdir", str(tmp_path / "a")])
    second = run_store.run("mlp", [*XOR, "--workdir", str(tmp_path / "b")])
    assert len(counted) == 1 and second == first
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["config"]["workdir"] == str(tmp_path / "b")  # as the run itself writes it
    monkeypatch.delenv(run_store.STORE)  # the same run trained for real: what the copy stands for
    run_store.run("mlp", [*XOR, "--workdir", str(tmp_path / "c")])
    assert len(counted) == 2
    assert comparable(tmp_path / "b") == comparable(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in (tmp_path / "c").iterdir())
    # a resume of the copy finds its own checkpoint and config: two more epochs
    summary = run_store.run("mlp", ["--task", "xor", "--epochs", "4", "--workdir", str(tmp_path / "b")])
    assert summary["steps"] == 2 * first["steps"] and len(counted) == 3


def test_what_could_differ_is_trained_again(counted, tmp_path, monkeypatch):
    run_store.run("mlp", [*XOR, "--workdir", str(tmp_path / "a")])
    run_store.run("mlp", [*XOR, "--seed", "1", "--workdir", str(tmp_path / "b")])  # another config
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("a user's file")
    run_store.run("mlp", [*XOR, "--workdir", str(tmp_path / "c")])  # a workdir with something in it
    run_store.run("mlp", [*XOR, "--init-from", str(tmp_path / "a"), "--workdir", str(tmp_path / "d")])  # another run's files
    with jax.default_matmul_precision("highest"):  # a jax option
        run_store.run("mlp", [*XOR, "--workdir", str(tmp_path / "e")])
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")  # other flags: another key
    run_store.run("mlp", [*XOR, "--workdir", str(tmp_path / "f")])
    assert len(counted) == 6
    assert (tmp_path / "c" / "mine.txt").read_text() == "a user's file"


def test_every_config_in_a_copy_names_its_own_workdir(counted, tmp_path):
    argv = ["--task", "xor", "--epochs", "1", "--compare-activations"]  # a run of runs, each with its config.json
    run_store.run("mlp", [*argv, "--workdir", str(tmp_path / "a")])
    run_store.run("mlp", [*argv, "--workdir", str(tmp_path / "b")])
    assert len(counted) == 1
    configs = list((tmp_path / "b").rglob("config.json"))
    assert len(configs) > 1
    for path in configs:
        assert json.loads(path.read_text())["config"]["workdir"] == str(path.parent), path
        assert path.read_text() == (tmp_path / "a" / path.relative_to(tmp_path / "b")).read_text().replace(
            str(tmp_path / "a"), str(tmp_path / "b"))  # as the run writes it, but for the workdir


def test_no_key_for_tfds_several_processes_or_help(tmp_path, monkeypatch):
    monkeypatch.setenv(run_store.STORE, str(tmp_path))
    workdir = ["--workdir", str(tmp_path / "w")]
    assert run_store._key("cnn", workdir)[0] is not None  # digits, one process
    for argv in (["--dataset", "mnist"], ["--num-processes", "2", "--process-id", "0", "--coordinator", "localhost:1"],
                 ["--help"]):
        assert run_store._key("cnn", [*argv, *workdir])[0] is None, argv
