"""Generated sequence-to-sequence tasks over digit strings, for an encoder-decoder transformer.

Each task needs attention across the whole input to produce each output token:
    reverse   "0123"      -> "3210"
    sort      "3102"      -> "0123"      (digits ascending)
    add       "907+310"   -> "1217"      two operands of n digits each, no leading zero unless n == 1;
                                         the sum has no leading zeros
The length n is the string length for reverse and sort, and the digits per operand for add.

Batches have static widths for a given max_len (source: max_source_len; target: max_target_len + 1,
room for BOS/EOS), so one compiled step serves every batch. Training batches are a Grain dataset whose
step s is a pure function of (seed, s), like `text.window_batches`, so a resumed run sees the same stream.
"""

from __future__ import annotations

from typing import NamedTuple

import grain
import numpy as np

from jaxdl.data.batches import ENDLESS
from jaxdl.errors import UsageError
from jaxdl.runtime import local_share

PAD, BOS, EOS = 0, 1, 2
CHARS = "0123456789+"  # ids 3..13
VOCAB_SIZE = 3 + len(CHARS)
TASKS = ("reverse", "sort", "add")
HELD_OUT_MIN_LEN = 4  # shorter lengths have too few distinct strings to hold some out of training
_TRAIN, _HELD_OUT, _LONGER = 1, 2, 3  # separate random streams for one seed

Batch = dict[str, np.ndarray]


class TestSet(NamedTuple):
    __test__ = False  # not a pytest class
    batch: Batch  # every example, in one batch
    sources: frozenset[str]  # the source strings, distinct


def encode(text: str) -> np.ndarray:
    bad = sorted(set(text) - set(CHARS))
    if bad:
        raise UsageError(f"sequence tasks use only digits and '+', got {''.join(bad)!r}")
    return np.fromiter((3 + CHARS.index(c) for c in text), np.int32, len(text))


def decode(ids) -> str:
    """Text up to the first EOS; PAD and BOS are skipped."""
    out = []
    for i in np.asarray(ids).reshape(-1).tolist():
        if i == EOS:
            break
        if i >= 3:
            out.append(CHARS[i - 3])
    return "".join(out)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise UsageError(f"unknown sequence task {task!r}: use one of {', '.join(TASKS)}")


def _check(task: str, min_len: int, max_len: int, **counts: int) -> None:
    _check_task(task)
    for name, value in dict(min_len=min_len, **counts).items():
        if value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    if min_len > max_len:
        raise UsageError(f"min_len {min_len} is greater than max_len {max_len}: lower min_len or raise max_len")


def target_for(task: str, source_text: str) -> str:
    _check_task(task)
    if task == "reverse":
        return source_text[::-1]
    if task == "sort":
        return "".join(sorted(source_text))
    a, b = source_text.split("+")
    return str(int(a) + int(b))


def max_source_len(task: str, max_len: int) -> int:
    _check_task(task)
    return 2 * max_len + 1 if task == "add" else max_len


def max_target_len(task: str, max_len: int) -> int:
    _check_task(task)
    return max_len + 1 if task == "add" else max_len  # a carry out of the top digit


def _distinct_sources(task: str, n: int) -> int:
    return (10 if n == 1 else 9 * 10 ** (n - 1)) ** 2 if task == "add" else 10 ** n


def _draw(task: str, rng: np.random.Generator, min_len: int, max_len: int) -> str:
    n = int(rng.integers(min_len, max_len + 1))
    if task != "add":
        return "".join(map(str, rng.integers(0, 10, n)))
    digits = rng.integers(0, 10, (2, n))
    digits[:, 0] = rng.integers(1 if n > 1 else 0, 10, 2)  # no leading zero unless one digit
    return "+".join("".join(map(str, d)) for d in digits)


def make_batch(task: str, sources: list[str], max_len: int) -> Batch:
    """Encode sources and their targets at the static widths for max_len."""
    S, T = max_source_len(task, max_len), max_target_len(task, max_len) + 1
    source_BS = np.full((len(sources), S), PAD, np.int32)
    target_in_BT = np.full((len(sources), T), PAD, np.int32)
    target_out_BT = np.full((len(sources), T), PAD, np.int32)
    lengths_B = np.zeros(len(sources), np.int32)
    for i, s in enumerate(sources):
        t = encode(target_for(task, s))
        source_BS[i, :len(s)], lengths_B[i] = encode(s), len(s)
        target_in_BT[i, :len(t) + 1] = np.concatenate([[BOS], t])
        target_out_BT[i, :len(t) + 1] = np.concatenate([t, [EOS]])
    return {"source": source_BS, "source_lengths": lengths_B, "target_in": target_in_BT,
            "target_out": target_out_BT, "target_mask": target_out_BT != PAD}


def _distinct_set(task: str, n: int, lo: int, hi: int, rng: np.random.Generator) -> list[str]:
    limit = _distinct_sources(task, lo) // 2
    if n > limit:
        raise UsageError(f"--test-examples {n} is too many: length {lo} has only {2 * limit} distinct "
                         f"{task} sources; use at most {limit} or raise the lengths")
    seen: dict[str, None] = {}  # insertion-ordered, so the batch is deterministic
    while len(seen) < n:
        seen[_draw(task, rng, lo, hi)] = None
    return list(seen)


def held_out(task: str, n: int, min_len: int, max_len: int, seed: int) -> TestSet:
    """n distinct in-distribution test examples, lengths uniform in [max(min_len, 4), max_len]; pass
    `.sources` as `exclude` to `sequence_batches` so training never sees them. Lengths below 4 are
    not held out: they have too few distinct strings (10 for n=1) to keep some unseen. At most half
    the strings of the shortest held-out length may be held out. Exclusion is by source string, so
    for sort other orderings of a held-out source (same target) may still be trained on."""
    _check(task, min_len, max_len, n=n)
    lo = max(min_len, HELD_OUT_MIN_LEN)
    if lo > max_len:
        raise UsageError(f"a held-out set needs --max-len >= {HELD_OUT_MIN_LEN} (got {max_len}): "
                         "shorter strings are too few to keep some out of training")
    sources = _distinct_set(task, n, lo, max_len, np.random.default_rng([seed, _HELD_OUT]))
    return TestSet(make_batch(task, sources, max_len), frozenset(sources))


def longer_test(task: str, n: int, max_len: int, extra: int, seed: int) -> TestSet:
    """n distinct examples longer than training (lengths max_len+1 .. max_len+extra), to report
    length generalisation separately; the batch widths follow max_len + extra."""
    _check(task, 1, max_len, n=n, extra=extra)
    hi = max_len + extra
    sources = _distinct_set(task, n, max_len + 1, hi, np.random.default_rng([seed, _LONGER]))
    return TestSet(make_batch(task, sources, hi), frozenset(sources))


def sequence_batches(task: str, batch_size: int, min_len: int, max_len: int, seed: int,
                     exclude: frozenset[str] = frozenset()) -> grain.MapDataset:
    """Endless training batches as a Grain dataset (step s -> this process's rows), lengths uniform in
    [min_len, max_len]: example i of the stream is a pure function of (seed, i), redrawn while it is
    in `exclude`; each process draws and encodes only its own rows."""
    _check(task, min_len, max_len, batch_size=batch_size)

    def example(i: int) -> str:
        rng = np.random.default_rng([seed, _TRAIN, i])
        for _ in range(100):
            source = _draw(task, rng, min_len, max_len)
            if source not in exclude:
                return source
        raise UsageError("the excluded sources cover almost every training string: hold out fewer")

    mine = local_share(batch_size)
    return grain.MapDataset.range(ENDLESS).batch(batch_size).map(
        lambda idx: make_batch(task, [example(int(i)) for i in idx[mine]], max_len))
