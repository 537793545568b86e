"""Joining JAX's multi-process runtime (`jax.distributed`) before anything touches a device.

Three ways in, all through `jax.distributed.initialize`:
- flags: `--coordinator HOST:PORT --num-processes N --process-id I` (any cluster, or localhost);
- a Cloud TPU VM pod slice, or a SLURM / Open MPI job of several processes: detected from the
  environment those launchers set, then `jax.distributed.initialize()` asks the cluster itself;
- neither: one process, nothing to do.

Process 0 alone prints and writes metrics, summaries and pictures; the others keep stderr (errors)
and stay silent otherwise. Checkpoints are written by all processes together (orbax).
On CPU the processes talk through gloo.
"""

from __future__ import annotations

import os
import sys

import jax

from jaxdl.errors import UsageError

_joined = False  # set once this process has joined a multi-process runtime


def detected_cluster() -> bool:
    """True on a multi-host Cloud TPU slice or inside a multi-process SLURM / Open MPI job."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True
    sizes = (os.environ.get(k, "1") for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))
    return any(s.isdigit() and int(s) > 1 for s in sizes)


def initialize(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> bool:
    """Join the runtime if the flags or the environment say this is one of several processes.

    Returns True when running multi-process. Safe to call again (later calls do nothing).
    """
    global _joined
    if _joined or getattr(jax.distributed, "is_initialized", lambda: False)():  # by us, or by the caller
        return True
    if coordinator or num_processes or process_id >= 0:
        if not coordinator or num_processes < 1 or not 0 <= process_id < num_processes:
            raise UsageError("multi-process runs need all three of --coordinator HOST:PORT, --num-processes N "
                             f"and --process-id I with 0 <= I < N (got {coordinator!r}, {num_processes}, {process_id})")
        if num_processes == 1:
            return False
        _cpu_collectives()
        jax.distributed.initialize(coordinator, num_processes, process_id)
    elif detected_cluster():
        _cpu_collectives()
        jax.distributed.initialize()
    else:
        return False
    _joined = True
    if jax.process_index() != 0:  # progress and results come from process 0 only (runtime chatter too)
        sys.stdout.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return True


def _cpu_collectives() -> None:
    """CPU processes need a collectives library for cross-process all-reduces (GPUs and TPUs bring
    theirs; the setting only concerns the CPU backend)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
