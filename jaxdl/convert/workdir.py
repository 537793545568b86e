"""A converted model as a jaxdl workdir: model.json, one orbax checkpoint (step 0, params only),
summary.json saying where the weights came from, and any files inference needs (a tokenizer).

The workdir is built beside its destination and renamed into place when complete, so a failure
leaves nothing under `out`; an `out` that exists is refused (nothing there is touched).
`jaxdl.load`, `jaxdl predict/generate` and `--init-from` read it like any trained run's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from typing import Any, Iterator

import numpy as np

from jaxdl.errors import UsageError


@dataclasses.dataclass
class Converted:
    """What a converter makes of a state dict: `info` (a family's run_info, as model.json holds it),
    `params` ({"params": ...}, numpy or jax arrays) and `files` ({name: bytes}) to put beside them."""

    info: dict[str, Any]
    params: Any
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)


def check_out(out: str) -> None:
    """Refuse a destination that exists or whose folder cannot be written, before anything is read."""
    if os.path.lexists(out):
        raise UsageError(f"--out {out} exists: give a new directory (nothing was written)")
    existing = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(existing):  # missing folders on the way are made
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise UsageError(f"--out {out}: cannot write under {existing} (not a writable directory)")


@contextlib.contextmanager
def new_directory(out: str) -> Iterator[str]:
    """Yield a fresh directory beside `out` to fill; renamed to `out` when the block ends without an
    exception, removed otherwise (so `out` appears complete or not at all)."""
    check_out(out)
    partial = f"{os.path.abspath(out)}.partial{os.getpid()}"
    try:
        os.makedirs(partial)  # with the folders above it
        yield partial
        os.rename(partial, out)
    finally:
        if os.path.exists(partial):
            shutil.rmtree(partial, ignore_errors=True)


def write(out: str, converted: Converted, source: str) -> None:
    """Write the workdir `out` (see the module docstring)."""
    import jax
    import jax.numpy as jnp

    from jaxdl.train import description
    from jaxdl.train.checkpoint import Checkpoints
    from jaxdl.train.metrics import write_summary
    from jaxdl.train.state import TrainState

    with new_directory(out) as partial:
        description.write(partial, {"format": description.FORMAT, **converted.info,
                                    "checkpoints": {"directory": None, "best_metric": None, "best_mode": "max"}})
        # numpy leaves as they are: orbax writes them without a device copy (gpt2-xl is 6 GB in float32)
        params = jax.tree.map(np.asarray, converted.params)
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state={},
                           rng=jax.random.key_data(jax.random.key(0)))
        checkpoints = Checkpoints(os.path.join(partial, "checkpoints"), keep=1)
        checkpoints.save(state)
        checkpoints.close()
        for name, data in converted.files.items():
            with open(os.path.join(partial, name), "wb") as f:
                f.write(data)
        write_summary(partial, {"converted_from": os.path.abspath(source), "num_params": converted.info["num_params"],
                                "dataset": converted.info["dataset"], "steps": 0})
