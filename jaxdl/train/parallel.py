"""Meshes and shardings: data parallel on `data`, fully-sharded data parallel (FSDP) on `fsdp`.

`--mesh data=N,fsdp=M` lays the devices of every process out as an N x M
`jax.make_mesh`. Each training batch is split over all N*M devices (FSDP is
data parallel too); `--batch-size` is the global batch, so each device gets
batch/(N*M) examples. Params, optimizer state and EMA follow one logical-axis
rule: an array of at least `FSDP_MIN_SIZE` elements is split on `fsdp` along
its largest dimension that M divides; everything else is replicated. XLA
inserts the all-gathers and reduce-scatters this implies.

With several processes (`jax.distributed`), every process builds the same
global arrays from its own share of each batch
(`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdl.errors import UsageError
from jaxdl.runtime import local_share

try:  # jax >= 0.6 makes meshes with Explicit axes by default; the shardings here are the classic (Auto) kind
    from jax.sharding import AxisType
    _AUTO = {"axis_types": (AxisType.Auto, AxisType.Auto)}
except ImportError:  # older jax: Auto is all there is
    _AUTO = {}

AXES = ("data", "fsdp")
FSDP_MIN_SIZE = 2 ** 12  # smaller arrays (biases, norms, counters) stay whole on every device


def parse_mesh(spec: str, device_count: int, processes: int = 1) -> dict[str, int]:
    """`data=4,fsdp=2` -> {"data": 4, "fsdp": 2}; an axis left out has size 1; "" puts all devices on data.

    One process may use fewer devices than it has (the first ones); several processes use them all.
    """
    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, value = part.partition("=")
        if name not in AXES or not eq or not value.isdigit() or int(value) < 1 or name in sizes:
            raise UsageError(f"--mesh {spec!r}: write data=N,fsdp=M with positive sizes (axes: {', '.join(AXES)})")
        sizes[name] = int(value)
    sizes = {a: sizes.get(a, 1) for a in AXES} if sizes else {"data": device_count, "fsdp": 1}
    need = sizes["data"] * sizes["fsdp"]
    if need > device_count or (need < device_count and processes > 1):
        raise UsageError(f"--mesh {spec!r} needs {need} devices, this run has {device_count}"
                         f"{f' in {processes} processes' if processes > 1 else ''}: make data x fsdp = {device_count}")
    return sizes


def make_mesh(spec: str = "") -> Mesh:
    """The devices (of all processes) as a data x fsdp mesh; default: all on `data`."""
    sizes = parse_mesh(spec, jax.device_count(), jax.process_count())
    shape = (sizes["data"], sizes["fsdp"])
    return jax.make_mesh(shape, AXES, devices=jax.devices()[:shape[0] * shape[1]], **_AUTO)


def describe(mesh: Mesh) -> str:
    return ",".join(f"{a}={n}" for a, n in mesh.shape.items())


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """The logical-axis rule: split the largest dimension that `fsdp` divides, if the array is big enough."""
    if fsdp == 1 or int(np.prod(shape)) < FSDP_MIN_SIZE:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return P(*(("fsdp" if d == dim else None) for d in range(len(shape))))
    return P()


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """A NamedSharding for every leaf of the train state (params, optimizer state, EMA, counters)."""
    return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(np.shape(x), mesh.shape["fsdp"])), state)


def batch_sharding(mesh: Mesh, many: bool = False) -> NamedSharding:
    """Examples split over every device (axis 1 when a leading axis stacks models)."""
    return NamedSharding(mesh, P(None, AXES) if many else P(AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def place(tree: Any, shardings: Any) -> Any:
    """Host or single-device arrays (the same values on every process) -> global arrays with these shardings."""
    def one(x, sharding):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(one, tree, shardings)


def to_local(tree: Any) -> Any:
    """A copy of (possibly sharded, possibly multi-process) arrays on this process's first device:
    what evaluation, sampling and plotting use, free of collectives."""
    def one(x):
        if not isinstance(x, jax.Array):
            return x
        if not x.is_fully_addressable:  # spans other processes: gather to every device first
            x = jax.jit(lambda a: a, out_shardings=NamedSharding(x.sharding.mesh, P()))(x)
            x = np.asarray(x.addressable_data(0))
        return jax.device_put(x, jax.local_devices()[0])
    return jax.tree.map(one, tree)


def check_batch_size(size: int, mesh: Mesh) -> None:
    if size % mesh.size:
        raise UsageError(f"a batch of {size} examples does not split over the {mesh.size} devices of --mesh "
                         f"{describe(mesh)}: use a --batch-size that is a multiple of {mesh.size}")


def global_batch(batch: Any, sharding: NamedSharding, many: bool = False, local: bool = False) -> Any:
    """A batch of numpy arrays -> what the jitted step takes. `local`: the batch is this process's rows
    (jaxdl.data.batches); otherwise the whole global batch, the same on every process, of which each
    process takes its rows. With several processes: global arrays split over the mesh, each process
    putting only its own rows on its own devices; with one, the numpy arrays themselves."""
    axis = 1 if many else 0
    rows = np.shape(jax.tree.leaves(batch)[0])[axis]
    check_batch_size(rows * jax.process_count() if local else rows, sharding.mesh)
    if jax.process_count() == 1:  # the jitted step's in_shardings place numpy inputs (the fastest path)
        return batch

    def one(x):
        x = np.asarray(x)
        if local:
            shape = x.shape[:axis] + (x.shape[axis] * jax.process_count(),) + x.shape[axis + 1:]
            return jax.make_array_from_process_local_data(sharding, x, shape)
        return jax.make_array_from_process_local_data(sharding, x[(slice(None),) * axis + (local_share(rows),)], x.shape)
    return jax.tree.map(one, batch)
