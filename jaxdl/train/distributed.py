"""Joining JAX's multi-process runtime (`jax.distributed`) before anything touches a device.

Three ways in, all through `jax.distributed.initialize`:
- flags: `--coordinator HOST:PORT --num-processes N --process-id I` (any cluster, or localhost);
- the environment a launcher gives each process it starts: `mpirun` (Open MPI), `srun` (one task of
  a SLURM job step) or a Cloud TPU VM pod slice; the variables are the ones jax's own cluster
  detection reads, so both agree on who is who;
- neither: one process, nothing to do. A shell or batch script inside a SLURM allocation is not a
  task of it (only `srun` starts tasks): it runs alone, and says so when the allocation has more.

Joining prints one line on every process's stderr, before waiting, saying how the launch was read
(which variables, how many processes, this one's index, the coordinator), and waits at most
JAXDL_JOIN_TIMEOUT seconds (default 300) for the others. Then it stops with one `error:` line and
exit status 2: the installed jax aborts the whole process (no Python exception) when its own
deadline passes, so the deadline is kept by a watchdog thread that exits first.

Process 0 alone prints and writes metrics, summaries and pictures; the others keep stderr (errors)
and stay silent otherwise. Checkpoints are written by all processes together (orbax).
On CPU the processes talk through gloo.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading

import jax

from jaxdl.errors import UsageError

DEFAULT_JOIN_TIMEOUT_S = 300.0
TIMEOUT_VAR = "JAXDL_JOIN_TIMEOUT"
# what jax's SlurmCluster needs before it detects a SLURM task; SLURM_STEP_NODELIST is set by srun alone
_SRUN_TASK_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
_JAX_MARGIN_S = 60  # jax's own deadline comes later than ours, so our line, not its abort, ends the wait

_joined = False  # set once this process has joined a multi-process runtime
_noticed = False  # the not-a-task notice is printed once


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process was started as one of several."""

    source: str  # the launcher, in words
    evidence: str  # the flags or variables it was read from
    num_processes: int | None  # None where jax counts them itself (TPU pods)
    process_id: int | None
    coordinator: str | None  # HOST:PORT handed to jax; None: jax finds it
    method: str | None = None  # jax's cluster_detection_method (None: any it detects)
    shown: str = ""  # the coordinator as printed, where only part of it is known here


def _int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _jax_coordinator(method: str) -> str | None:
    """The coordinator jax itself picks for this launcher (its cluster classes are private, hence
    the guard): printed before waiting, and handed to jax so both are the same address."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return os.environ["JAX_COORDINATOR_ADDRESS"]
    try:
        from jax._src import clusters

        env = next(c for c in clusters.ClusterEnv._cluster_types if c.name == method)
        return env.get_coordinator_address(timeout_secs=None,
                                           override_coordinator_port=os.environ.get("JAX_COORDINATOR_PORT"))
    except Exception:  # another jax's internals, or variables it cannot parse: jax will say
        return None


def _mpirun() -> Launch | None:
    n, i = _int("OMPI_COMM_WORLD_SIZE"), _int("OMPI_COMM_WORLD_RANK")
    if n is None or n < 2 or i is None:
        return None
    # Open MPI 5 no longer sets OMPI_MCA_orte_hnp_uri, jax's only way to the launcher's host
    known = "OMPI_MCA_orte_hnp_uri" in os.environ or os.environ.get("JAX_COORDINATOR_ADDRESS")
    return Launch("mpirun rank", f"OMPI_COMM_WORLD_RANK={i}, OMPI_COMM_WORLD_SIZE={n}", n, i,
                  _jax_coordinator("ompi") if known else None, "ompi")


def _srun_task() -> Launch | None:
    if any(v not in os.environ for v in _SRUN_TASK_VARS):
        return None
    # a step may run fewer tasks than the job holds (`srun -n 2` in an allocation of 4): count the step's
    n = _int("SLURM_STEP_NUM_TASKS")
    n = _int("SLURM_NTASKS") if n is None else n
    i = _int("SLURM_PROCID")
    if n is None or n < 2 or i is None:
        return None
    counted = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in os.environ else "SLURM_NTASKS"
    return Launch("srun task", f"SLURM_PROCID={i}, {counted}={n}, SLURM_JOB_ID={os.environ['SLURM_JOB_ID']}, "
                  f"SLURM_STEP_NODELIST={os.environ['SLURM_STEP_NODELIST']}", n, i, _jax_coordinator("slurm"), "slurm")


def _tpu_pod() -> Launch | None:
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    megascale = os.environ.get("MEGASCALE_COORDINATOR_ADDRESS", "")
    if len(hosts) < 2 and not megascale:
        return None
    evidence = [f"TPU_WORKER_ID={os.environ['TPU_WORKER_ID']}"] if "TPU_WORKER_ID" in os.environ else []
    evidence += [f"TPU_WORKER_HOSTNAMES of {len(hosts)} hosts"] if len(hosts) > 1 else []
    evidence += [f"MEGASCALE_COORDINATOR_ADDRESS={megascale}"] if megascale else []
    host = (megascale or hosts[0]).split(":")[0]  # jax's choice: process 0's host
    port = os.environ.get("JAX_COORDINATOR_PORT")
    return Launch("Cloud TPU pod slice", ", ".join(evidence), None, None, None,
                  shown=f"{host}:{port}" if port else f"{host} (jax's default port)")


def detect() -> Launch | None:
    """The launcher that started this process as one of several, or None: in jax's order (an mpirun
    inside a SLURM job sets SLURM variables for its daemons, not for the ranks)."""
    return _mpirun() or _srun_task() or _tpu_pod()


def detected_cluster() -> bool:
    """True on a multi-host Cloud TPU slice, in a SLURM job step of several tasks started by srun, or
    under mpirun with several ranks."""
    return detect() is not None


def allocation_notice() -> str:
    """The line for a process inside a SLURM allocation of several tasks that srun did not start
    ("" otherwise)."""
    if "SLURM_STEP_NODELIST" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ:  # srun or mpirun chose
        return ""
    n = _int("SLURM_NTASKS")
    if n is None or n < 2:
        return ""
    return (f"SLURM allocation of {n} tasks (SLURM_NTASKS), but this process was not started by srun: "
            "running as one process; use srun to run on all of them")


def join_timeout(seconds: float | None = None) -> float:
    """How long joining waits for the others: `seconds`, else JAXDL_JOIN_TIMEOUT, else 300."""
    given, name = seconds, "the join timeout"
    if seconds is None:
        given, name = os.environ.get(TIMEOUT_VAR, "").strip(), TIMEOUT_VAR
        if not given:
            return DEFAULT_JOIN_TIMEOUT_S
        try:
            seconds = float(given)
        except ValueError:
            seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"{name} must be a number of seconds > 0, got {given!r}")
    return float(seconds)


def initialize(coordinator: str = "", num_processes: int = 0, process_id: int = -1,
               join_timeout_s: float | None = None) -> bool:
    """Join the runtime if the flags or the environment say this is one of several processes.

    Returns True when running multi-process. Safe to call again (later calls do nothing).
    join_timeout_s: how long to wait for the others (default: JAXDL_JOIN_TIMEOUT, else 300 s); past
    it the process prints one `error:` line and exits with status 2.
    """
    global _joined, _noticed
    if _joined or getattr(jax.distributed, "is_initialized", lambda: False)():  # by us, or by the caller
        return True
    if coordinator or num_processes or process_id >= 0:
        if not coordinator or num_processes < 1 or not 0 <= process_id < num_processes:
            raise UsageError("multi-process runs need all three of --coordinator HOST:PORT, --num-processes N "
                             f"and --process-id I with 0 <= I < N (got {coordinator!r}, {num_processes}, {process_id})")
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--coordinator wants HOST:PORT (process 0's host and a free port), got {coordinator!r}")
        if num_processes == 1:
            return False
        launch = Launch("started with flags", "--coordinator, --num-processes, --process-id", num_processes,
                        process_id, coordinator)
    else:
        launch = detect()
        if launch is None:
            if (notice := allocation_notice()) and not _noticed:
                print(notice, file=sys.stderr, flush=True)
                _noticed = True
            return False
        if launch.method == "ompi" and launch.coordinator is None:
            raise UsageError(f"mpirun started {launch.num_processes} processes, but there is no OMPI_MCA_orte_hnp_uri "
                             "to find process 0's host from (Open MPI 5 sets none): set JAX_COORDINATOR_ADDRESS="
                             "HOST:PORT (process 0's host, a free port) for all of them, or use --coordinator")
    _join(launch, join_timeout(join_timeout_s))
    _joined = True
    if jax.process_index() != 0:  # progress and results come from process 0 only (runtime chatter too)
        sys.stdout.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return True


def _join(launch: Launch, timeout_s: float) -> None:
    n, i = launch.num_processes, launch.process_id
    where = launch.coordinator or launch.shown or "found by jax"
    count = f"{n} processes" if n else "the pod's processes (jax counts them)"
    me = f"process {i}" if i is not None else "one of them"
    print(f"joining {count} as {me}: {launch.source} ({launch.evidence}); coordinator {where}; "
          f"waiting up to {timeout_s:g} s for all of them ({TIMEOUT_VAR})", file=sys.stderr, flush=True)
    all_n = f"all {n} processes" if n else "every process of the pod"
    if i == 0:
        failure = (f"not all {n} processes reached the coordinator {where} (this process, 0 of {n}) after "
                   f"{timeout_s:g} s: start {all_n} with the same coordinator, or give them longer with {TIMEOUT_VAR}")
    else:
        who = f"this is process {i} of {n}" if n else "this is one process of the pod"
        failure = (f"no answer from the coordinator {where} after {timeout_s:g} s ({who}, {launch.source}): it "
                   f"answers once {all_n} have joined: start {all_n} (process 0 runs the coordinator), "
                   f"or give them longer with {TIMEOUT_VAR}")
    joined = threading.Event()

    def watchdog() -> None:
        # the main thread is inside jax's blocking connect, which only ends by aborting the process
        if not joined.wait(timeout_s):
            sys.stdout.flush()
            print(f"error: {failure}", file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=watchdog, name="jaxdl-join-timeout", daemon=True).start()
    _cpu_collectives()
    try:  # what is None here, jax detects; local device ids come from the same launcher (method)
        jax.distributed.initialize(coordinator_address=launch.coordinator, num_processes=n, process_id=i,
                                   cluster_detection_method=launch.method,
                                   initialization_timeout=math.ceil(timeout_s) + _JAX_MARGIN_S)
    except Exception as e:  # jax versions that raise when the coordinator stays silent
        text = str(e)
        if any(s in text for s in ("DEADLINE_EXCEEDED", "UNAVAILABLE", "Failed to recognize coordinator")):
            raise UsageError(failure) from None
        raise
    finally:
        joined.set()


def _cpu_collectives() -> None:
    """CPU processes need a collectives library for cross-process all-reduces (GPUs and TPUs bring
    theirs; the setting only concerns the CPU backend)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
