"""Mesh specs, the FSDP rule, and joining the multi-process runtime: the parts that need no extra devices."""

import os

import jax
import pytest

from jaxdl.errors import UsageError
from jaxdl.train import distributed
from jaxdl.train.parallel import P, param_spec, parse_mesh


@pytest.mark.parametrize("spec, devices, want", [
    ("", 8, {"data": 8, "fsdp": 1}),
    ("data=4,fsdp=2", 8, {"data": 4, "fsdp": 2}),
    ("fsdp=8", 8, {"data": 1, "fsdp": 8}),
    (" data=2 , fsdp=4 ", 8, {"data": 2, "fsdp": 4}),
    ("data=1", 8, {"data": 1, "fsdp": 1}),  # one process may use fewer devices than it has
])
def test_mesh_specs(spec, devices, want):
    assert parse_mesh(spec, devices) == want


@pytest.mark.parametrize("spec, processes, match", [
    ("data=16", 1, "needs 16 devices, this run has 8"),
    ("data=4", 2, "needs 4 devices, this run has 8 in 2 processes"),  # every process's devices take part
    ("model=8", 1, "write data=N,fsdp=M"),
    ("data=0", 1, "write data=N,fsdp=M"),
    ("data=2,data=4", 1, "write data=N,fsdp=M"),
    ("data:8", 1, "write data=N,fsdp=M"),
])
def test_bad_mesh_specs_say_what_to_write(spec, processes, match):
    with pytest.raises(UsageError, match=match):
        parse_mesh(spec, 8, processes)


def test_the_fsdp_rule_splits_the_largest_divisible_dimension_of_big_arrays():
    assert param_spec((18432, 512), 4) == P("fsdp", None)
    assert param_spec((3, 3, 64, 128), 4) == P(None, None, None, "fsdp")  # 73,728 elements, 128 the largest
    assert param_spec((3, 3, 3, 32), 4) == P()  # 864 elements: replicated
    assert param_spec((4099, 3), 4) == P()  # big, but no dimension divides
    assert param_spec((4098, 4), 4) == P(None, "fsdp")  # the largest dimension that divides
    assert param_spec((18432, 512), 1) == P() and param_spec((), 4) == P()


def test_one_process_joins_nothing_and_partial_flags_are_refused(monkeypatch):
    for k in [k for k in os.environ if k.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE_"))]:
        monkeypatch.delenv(k)
    assert not distributed.detected_cluster() and not distributed.initialize()
    assert not distributed.initialize("localhost:1234", 1, 0)  # a "group" of one: nothing to join
    for args in (("localhost:1234", 2, -1), ("", 2, 0), ("localhost:1234", 0, 0), ("localhost:1234", 2, 2)):
        with pytest.raises(UsageError, match="need all three of --coordinator"):
            distributed.initialize(*args)
    assert jax.process_count() == 1


@pytest.mark.parametrize("env, several", [
    ({"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1,t1v-2,t1v-3"}, True), ({"TPU_WORKER_HOSTNAMES": "localhost"}, False),
    ({"SLURM_NTASKS": "4"}, False), ({"SLURM_NTASKS": "1"}, False),  # an allocation, not an srun task
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "4", "SLURM_PROCID": "0",
      "SLURM_LOCALID": "0"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, False), ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"}, True),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2:8080"}, True), ({"SLURM_NTASKS": "2(x3)"}, False),
])
def test_multi_process_launchers_are_detected_from_their_environment(monkeypatch, env, several):
    for k in [k for k in os.environ if k.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE_"))]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.detected_cluster() == several
