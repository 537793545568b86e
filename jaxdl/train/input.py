"""The run's training batches, read the way `fit` needs them: round by round, from any step.

A `grain.MapDataset` (element s = step s's batch, this process's rows: jaxdl.data.batches) is read
through Grain's prefetching iterator, whose state goes into every checkpoint and positions the
iterator on resume. A callable `(round, batches to skip) -> iterable of global batches` (the same
on every process) is the plain form, for data made on the spot.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator

import grain

from jaxdl.errors import UsageError

Batches = grain.MapDataset | Callable[[int, int], Iterable[Any]]

# read in the training thread: JAX's asynchronous dispatch already overlaps it with the step, and
# read-ahead threads cost more than they hid on two cores (docs/speed.md, benchmarks/input_pipeline.py)
READ = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


class TrainInput:
    def __init__(self, source: Batches, step: int, saved: dict | None):
        """Reading from global step `step`; `saved` is the iterator state a checkpoint kept (None for
        one written before iterator states were kept: the step alone places the iterator)."""
        self.source = source
        self.local = isinstance(source, grain.MapDataset)  # batches hold this process's rows only
        self.iterator = None
        if self.local:
            state = saved or {"next_index": step}
            if state.get("next_index") != step:
                raise UsageError(f"the checkpoint of step {step} holds a data iterator at {state}, not at that step: "
                                 "delete that checkpoint or use a new --workdir")
            self.iterator = iter(source.to_iter_dataset(READ))
            self.iterator.set_state(state)

    def round(self, epoch: int, skip: int, count: int) -> Iterator[Any]:
        """The next `count` batches: those of round `epoch` after the first `skip`."""
        if self.iterator is not None:
            return itertools.islice(self.iterator, count)
        return itertools.islice(self.source(epoch, skip), count)

    def state(self) -> dict | None:
        """What a checkpoint keeps: the iterator's position (Grain's own state), or None."""
        return None if self.iterator is None else self.iterator.get_state()
