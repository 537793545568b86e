"""Batches of numpy arrays: deterministic epoch order, padded eval batches."""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of `n` examples for `epoch`: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(arrays: Mapping[str, np.ndarray], batch_size: int, seed: int, epoch: int,
                  skip: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Full batches in this epoch's order, from batch `skip` on; the remainder is dropped."""
    n = len(next(iter(arrays.values())))
    order = epoch_order(n, seed, epoch)
    for b in range(skip, n // batch_size):
        idx = np.sort(order[b * batch_size:(b + 1) * batch_size])  # sorted: faster gathers, same set
        yield {k: v[idx] for k, v in arrays.items()}


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size


def eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order; the last batch is padded and `mask` marks real rows."""
    n = len(next(iter(arrays.values())))
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        pad = batch_size - (stop - start)
        batch = {k: np.concatenate([v[start:stop], np.repeat(v[start:start + 1], pad, axis=0)]) if pad else v[start:stop]
                 for k, v in arrays.items()}
        batch["mask"] = np.arange(batch_size) < (stop - start)
        yield batch
