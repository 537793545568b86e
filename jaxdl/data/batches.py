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


def cycled_batches(arrays: Mapping[str, np.ndarray], batch_size: int, seed: int, epoch: int, steps: int,
                   skip: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """`steps` batches for an epoch of fixed length over a small dataset: successive permutations,
    each a pure function of (seed, epoch, k), concatenated; batches past `skip` are yielded."""
    n = len(next(iter(arrays.values())))
    need = steps * batch_size
    order = np.concatenate([np.random.default_rng([seed, epoch, k]).permutation(n) for k in range(-(-need // n))])
    for b in range(skip, steps):
        idx = order[b * batch_size:(b + 1) * batch_size]
        yield {k: v[idx] for k, v in arrays.items()}


def stacked(iterators: list[Iterator[dict[str, np.ndarray]]]) -> Iterator[dict[str, np.ndarray]]:
    """Batches of N models' iterators stacked on a leading model axis (for a vmapped step)."""
    for batches in zip(*iterators):
        yield {k: np.stack([b[k] for b in batches]) for k in batches[0]}
