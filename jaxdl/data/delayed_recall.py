"""Delayed recall: one symbol, then `lag` more steps, then name the symbol. Generated, never downloaded.

A sequence of `length` tokens holds one of `symbols` symbols at position `length - 1 - lag` and
filler everywhere else: a blank (token 0) or, with `distractors` > 0, a distractor drawn uniformly
from its own alphabet, which the model must learn to ignore. The label is the symbol (0 ..
symbols - 1), so the answer read at the last step depends on an input exactly `lag` steps back and
on nothing else; chance is 1 / symbols.

    token 0                              blank
    tokens 1 .. symbols                  the symbols (label = token - 1)
    tokens symbols + 1 .. + distractors  distractors

Padding every lag to one `length` (blanks or distractors before the symbol) gives every lag the
same shapes, so models trained at different lags stack into one vmapped step. Step s's batch is a
pure function of (seed, lag, s), drawn whole by numpy, so a resumed run reads the same batches;
the test set comes from another stream of the same seed.
"""

from __future__ import annotations

import grain
import numpy as np

from jaxdl.data.batches import ENDLESS
from jaxdl.runtime import local_share

BLANK = 0
_TRAIN, _TEST = 1, 2  # separate random streams for one seed

Batch = dict[str, np.ndarray]


def vocab_size(symbols: int, distractors: int) -> int:
    return 1 + symbols + distractors


def recall_batch(rng: np.random.Generator, batch_size: int, lag: int, length: int, symbols: int,
                 distractors: int) -> Batch:
    """`tokens` (B, length) int32 and `label` (B,) int32: the symbol `lag` steps before the last token."""
    if not 0 <= lag < length:
        raise ValueError(f"lag {lag} needs a sequence longer than it, got length {length}")
    label_B = rng.integers(0, symbols, batch_size).astype(np.int32)
    if distractors:
        tokens_BT = rng.integers(1 + symbols, 1 + symbols + distractors, (batch_size, length)).astype(np.int32)
    else:
        tokens_BT = np.full((batch_size, length), BLANK, np.int32)
    tokens_BT[:, length - 1 - lag] = 1 + label_B
    return {"tokens": tokens_BT, "label": label_B}


def train_batches(batch_size: int, lag: int, length: int, symbols: int, distractors: int,
                  seed: int) -> grain.MapDataset:
    """Endless training batches: step s -> this process's rows of a batch drawn from (seed, lag, s)."""
    mine = local_share(batch_size)

    def batch(s: int) -> Batch:
        drawn = recall_batch(np.random.default_rng([seed, _TRAIN, lag, int(s)]), batch_size, lag, length, symbols,
                             distractors)
        return {k: v[mine] for k, v in drawn.items()}

    return grain.MapDataset.range(ENDLESS).map(batch)


def test_set(n: int, lag: int, length: int, symbols: int, distractors: int, seed: int) -> Batch:
    """n held-out sequences from the seed's test stream (a stream training never reads)."""
    return recall_batch(np.random.default_rng([seed, _TEST, lag]), n, lag, length, symbols, distractors)
