"""Training batches as Grain datasets; padded eval batches as numpy.

A training source is a `grain.MapDataset` whose element `s` is global step `s`'s batch, as
*this process's rows* of it: each process of a multi-host job gathers (and decodes, generates)
only its share, and the engine assembles the global batch from the shares
(`jax.make_array_from_process_local_data`). Element `s` is a pure function of (seed, s): each pass over the
data is a new seeded permutation. The engine iterates it with
Grain's prefetching iterator and keeps that iterator's state in every checkpoint, so a resumed run
reads exactly the batches it would have read.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Iterator, Mapping

import grain
import numpy as np

from jaxdl.runtime import local_share

ENDLESS = sys.maxsize  # the length of a stream without epochs


@functools.lru_cache(maxsize=8)
def permutation(n: int, seed: int, pass_: int) -> np.ndarray:
    """Pass `pass_`'s order of n examples: a pure function of (seed, pass). Drawn whole by numpy, not by
    Grain's per-index `shuffle`, which costs ~10 ms an index on a 4-example dataset and ~50 us on 1,000."""
    return np.random.default_rng([seed, pass_]).permutation(n)


def positions(n: int, seed: int, start: int, count: int) -> np.ndarray:
    """Examples `start .. start + count - 1` of the endless stream of passes over n examples."""
    first, at = divmod(start, n)
    if at + count <= n:  # within one pass
        return permutation(n, seed, first)[at:at + count]
    stream = np.arange(start, start + count)
    passes, at = np.divmod(stream, n)
    out = np.empty(count, np.int64)
    for p in np.unique(passes):
        out[passes == p] = permutation(n, seed, int(p))[at[passes == p]]
    return out


def _gather(arrays: Mapping[str, np.ndarray], batch_size: int) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A global batch's example indices -> this process's rows of the arrays (indices sorted first:
    faster gathers, the same set)."""
    mine = local_share(batch_size)
    return lambda idx: {k: v[np.sort(idx)[mine]] for k, v in arrays.items()}


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values())))


def _steps() -> grain.MapDataset:
    return grain.MapDataset.range(ENDLESS)


def epoch_batches(arrays: Mapping[str, np.ndarray], batch_size: int, seed: int) -> grain.MapDataset:
    """Epochs of full batches: step s is batch s % K of epoch s // K (K = n // batch_size), each epoch
    a new seeded permutation whose last n % batch_size examples are left out."""
    n = _rows(arrays)
    per_epoch = steps_per_epoch(n, batch_size)

    def indices(s: int) -> np.ndarray:
        epoch, b = divmod(int(s), per_epoch)
        return permutation(n, seed, epoch)[b * batch_size:(b + 1) * batch_size]

    gather = _gather(arrays, batch_size)
    return _steps().map(lambda s: gather(indices(s)))


def cycled_batches(arrays: Mapping[str, np.ndarray], batch_size: int, seed: int) -> grain.MapDataset:
    """Endless batches over a small dataset: successive seeded permutations, batched straight across
    their boundaries (for runs counted in steps rather than epochs)."""
    n, gather = _rows(arrays), _gather(arrays, batch_size)
    return _steps().map(lambda s: gather(positions(n, seed, int(s) * batch_size, batch_size)))


def stacked(datasets: list[grain.MapDataset]) -> grain.MapDataset:
    """N models' batches stacked on a leading model axis (for a vmapped step)."""
    def stack(s: int) -> dict[str, np.ndarray]:
        per_model = [d[s] for d in datasets]  # each model's batch read once
        return {k: np.stack([b[k] for b in per_model]) for k in per_model[0]}

    return _steps().map(stack)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size


def eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order; the last batch is padded and `mask` marks real rows."""
    n = _rows(arrays)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        pad = batch_size - (stop - start)
        batch = {k: np.concatenate([v[start:stop], np.repeat(v[start:start + 1], pad, axis=0)]) if pad else v[start:stop]
                 for k, v in arrays.items()}
        batch["mask"] = np.arange(batch_size) < (stop - start)
        yield batch
