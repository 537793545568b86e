"""Which launches join the multi-process runtime, what a joining process says before it waits, and how
long it waits: environments of salloc/sbatch, srun, mpirun and TPU pods are set by hand and
`jax.distributed.initialize` is replaced by a recorder (no cluster), except in the last test, where a
real process waits for a coordinator that never comes."""

import os
import socket
import subprocess
import sys
import threading

import jax
import pytest

from jaxdl.errors import UsageError
from jaxdl.train import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "TPU_", "MEGASCALE_", "JAX_COORDINATOR", "JAXDL_JOIN_TIMEOUT")

SALLOC = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_NPROCS": "4", "SLURM_NNODES": "2",
          "SLURM_JOB_NODELIST": "node[003-004]", "SLURM_NODELIST": "node[003-004]"}
SBATCH = {**SALLOC, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}  # the batch script's own
SRUN = {**SBATCH, "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "node[003-004]", "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_STEP_NUM_NODES": "2", "SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_NODEID": "1"}
MPIRUN = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
          "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911"}
TPU_POD = {"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1,t1v-2,t1v-3", "TPU_WORKER_ID": "1"}


@pytest.fixture
def launched(monkeypatch):
    """Clears every launcher's variables; returns set(env) and the recorded initialize calls."""
    for k in list(os.environ):
        if k.startswith(LAUNCHER_PREFIXES):
            monkeypatch.delenv(k)
    monkeypatch.setattr(distributed, "_joined", False)
    monkeypatch.setattr(distributed, "_noticed", False)
    monkeypatch.setattr(distributed, "_cpu_collectives", lambda: None)  # keep this process's config as it is
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))

    def set_env(env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    return set_env, calls


def _lines(capsys):
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.splitlines()


@pytest.mark.parametrize("env", [SALLOC, SBATCH], ids=["salloc shell", "sbatch script"])
def test_a_process_in_an_allocation_but_not_started_by_srun_runs_alone_and_says_so(launched, capsys, env):
    set_env, calls = launched
    set_env(env)
    assert not distributed.detected_cluster() and not distributed.initialize()
    assert not distributed.initialize()  # the notice comes once
    [line] = _lines(capsys)
    assert line == ("SLURM allocation of 4 tasks (SLURM_NTASKS), but this process was not started by srun: "
                    "running as one process; use srun to run on all of them")
    assert calls == []


def test_one_task_one_rank_or_no_launcher_at_all_run_alone_quietly(launched, capsys):
    set_env, calls = launched
    assert not distributed.initialize()
    set_env({**SBATCH, "SLURM_NTASKS": "1", "JAXDL_JOIN_TIMEOUT": "soon"})  # only read when joining
    assert not distributed.initialize()
    set_env({**SALLOC, "OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0"})  # mpirun -n 1: chosen
    assert not distributed.initialize()
    assert _lines(capsys) == [] and calls == []


def test_an_srun_task_joins_with_the_coordinator_jax_would_pick_and_says_so_first(launched, capsys):
    set_env, calls = launched
    set_env(SRUN)
    assert distributed.initialize()
    # jax's rule: the step's first host, port 61440 + job id mod 4096
    [call] = calls
    assert call["coordinator_address"] == "node003:61586" and call["num_processes"] == 4
    assert call["process_id"] == 2 and call["cluster_detection_method"] == "slurm"
    assert call["initialization_timeout"] >= 300  # jax's own deadline comes after ours
    from jax._src.clusters import SlurmCluster
    assert SlurmCluster.is_env_present() and SlurmCluster.get_coordinator_address(None, None) == "node003:61586"
    [line] = _lines(capsys)
    assert line.startswith("joining 4 processes as process 2: srun task (SLURM_PROCID=2, SLURM_STEP_NUM_TASKS=4, ")
    assert "SLURM_JOB_ID=4242" in line and "coordinator node003:61586" in line and "up to 300 s" in line


@pytest.mark.parametrize("step, want", [({"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2"}, 2),
                                        ({"SLURM_STEP_NUM_TASKS": "2"}, 2),  # the step's count, not the job's
                                        ({"SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1"}, 0),
                                        ({"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}, 0)])
def test_an_srun_step_counts_its_own_tasks(launched, capsys, step, want):
    set_env, calls = launched
    set_env({**SRUN, "SLURM_PROCID": "1", **step})
    assert distributed.initialize() == bool(want)
    assert [c["num_processes"] for c in calls] == ([want] if want else [])
    lines = _lines(capsys)
    if want:
        assert len(lines) == 1 and lines[0].startswith("joining 2 processes as process 1")
    else:  # srun chose one task: nothing to notice
        assert lines == []


def test_an_mpirun_rank_joins_even_inside_a_slurm_job(launched, capsys):
    set_env, calls = launched
    set_env({**SRUN, **MPIRUN})  # mpirun's daemons are srun tasks: their SLURM_PROCID is not the rank
    assert distributed.detected_cluster() and distributed.initialize()
    # jax's rule: the launcher's first address, port 61440 + (job id // 4096) mod 4096
    [call] = calls
    assert (call["coordinator_address"], call["num_processes"], call["process_id"]) == ("10.96.0.1:62624", 4, 3)
    assert call["cluster_detection_method"] == "ompi"
    [line] = _lines(capsys)
    assert line.startswith("joining 4 processes as process 3: mpirun rank (OMPI_COMM_WORLD_RANK=3, "
                           "OMPI_COMM_WORLD_SIZE=4); coordinator 10.96.0.1:62624;")


def test_an_mpirun_without_a_launcher_address_needs_one(launched, capsys):
    set_env, calls = launched
    set_env({k: v for k, v in MPIRUN.items() if k != "OMPI_MCA_orte_hnp_uri"})
    with pytest.raises(UsageError, match="set JAX_COORDINATOR_ADDRESS=HOST:PORT"):
        distributed.initialize()
    set_env({"JAX_COORDINATOR_ADDRESS": "10.0.0.7:4321"})
    assert distributed.initialize() and calls[0]["coordinator_address"] == "10.0.0.7:4321"


def test_a_tpu_pod_leaves_the_values_to_jax_and_names_what_it_saw(launched, capsys):
    set_env, calls = launched
    set_env({"TPU_WORKER_HOSTNAMES": "localhost"})
    assert not distributed.initialize() and calls == []  # one host: one process
    set_env(TPU_POD)
    assert distributed.initialize()
    [call] = calls
    assert [call[k] for k in ("coordinator_address", "num_processes", "process_id", "cluster_detection_method")] \
        == [None] * 4
    [line] = _lines(capsys)
    assert "Cloud TPU pod slice (TPU_WORKER_ID=1, TPU_WORKER_HOSTNAMES of 4 hosts)" in line and "t1v-0" in line


def test_flags_join_and_a_coordinator_without_a_port_is_refused(launched, capsys):
    set_env, calls = launched
    set_env(SALLOC)  # flags win over the environment, and no notice is due
    for bad in ("localhost", ":1234", "localhost:http", "localhost:70000"):
        with pytest.raises(UsageError, match="--coordinator wants HOST:PORT"):
            distributed.initialize(bad, 2, 1)
    assert distributed.initialize("10.1.2.3:1234", 3, 1)
    assert [(c["coordinator_address"], c["num_processes"], c["process_id"]) for c in calls] == [("10.1.2.3:1234", 3, 1)]
    [line] = _lines(capsys)
    assert line.startswith("joining 3 processes as process 1: started with flags")
    assert "coordinator 10.1.2.3:1234" in line


def test_the_wait_comes_from_the_parameter_then_the_environment(launched, capsys):
    set_env, calls = launched
    set_env({**SRUN, "JAXDL_JOIN_TIMEOUT": "7.5"})
    assert distributed.initialize()
    distributed._joined = False
    assert distributed.initialize(join_timeout_s=20)
    assert all(a >= b for a, b in zip([c["initialization_timeout"] for c in calls], [8, 20]))
    lines = _lines(capsys)
    assert "waiting up to 7.5 s" in lines[0] and "waiting up to 20 s" in lines[1]


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_wait_is_refused_before_joining(launched, capsys, value):
    set_env, calls = launched
    set_env({**SRUN, "JAXDL_JOIN_TIMEOUT": value})
    with pytest.raises(UsageError, match=f"JAXDL_JOIN_TIMEOUT must be a number of seconds > 0, got '{value}'"):
        distributed.initialize()
    with pytest.raises(UsageError, match="the join timeout must be"):
        distributed.initialize(join_timeout_s=0)
    assert calls == [] and _lines(capsys) == []


def test_a_jax_that_raises_on_its_deadline_gives_the_same_one_line(launched, monkeypatch):
    set_env, _ = launched
    set_env(SRUN)

    def deadline(**kw):
        raise RuntimeError("DEADLINE_EXCEEDED: Deadline Exceeded\nRPC: /xla.coordination.Coordination/RegisterTask")
    monkeypatch.setattr(jax.distributed, "initialize", deadline)
    with pytest.raises(UsageError, match=r"^no answer from the coordinator node003:61586 after 300 s \(this is "
                                         r"process 2 of 4, srun task\): .* start all 4 processes"):
        distributed.initialize()

    def bug(**kw):
        raise ValueError("something else")
    monkeypatch.setattr(jax.distributed, "initialize", bug)
    with pytest.raises(ValueError, match="something else"):  # not every failure is the user's
        distributed.initialize()


@pytest.mark.parametrize("procid, want", [
    ("0", "error: not all 4 processes reached the coordinator node003:61586 (this process, 0 of 4) after 0.2 s: "
          "start all 4 processes"),
    ("3", "error: no answer from the coordinator node003:61586 after 0.2 s (this is process 3 of 4, srun task)"),
], ids=["process 0", "process 3"])
def test_the_watchdog_ends_a_wait_that_jax_never_ends(launched, monkeypatch, capsys, procid, want):
    set_env, _ = launched
    set_env({**SRUN, "SLURM_PROCID": procid})
    exited = threading.Event()
    codes = []

    def fake_exit(code):
        codes.append(code)
        exited.set()
    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: exited.wait(60))  # a connect that hangs
    distributed.initialize(join_timeout_s=0.2)
    assert codes == [2]
    lines = _lines(capsys)
    assert len(lines) == 2 and lines[0].startswith("joining") and lines[1].startswith(want)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_task_whose_coordinator_never_comes_stops_with_one_line(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    env.update({**SRUN, "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2",
                "SLURM_PROCID": "1", "JAX_COORDINATOR_PORT": str(port), "JAXDL_JOIN_TIMEOUT": "5",
                "JAX_PLATFORMS": "cpu"})
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "experiments/cnn.py", "--workdir", str(workdir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)  # a guard against a hang, not a measure
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert [i for i, line in enumerate(lines) if line.startswith("error: ")] == [len(lines) - 1], lines
    assert lines[-1].startswith(f"error: no answer from the coordinator 127.0.0.1:{port} after 5 s "
                                "(this is process 1 of 2, srun task)") and "start all 2 processes" in lines[-1]
    assert any(line.startswith("joining 2 processes as process 1: srun task (SLURM_PROCID=1") for line in lines)
    assert not workdir.exists()  # stopped before writing anything
