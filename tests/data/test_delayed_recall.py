"""Delayed recall: the label really is the token `lag` steps before the end, and batches are a pure
function of (seed, lag, step)."""

import numpy as np
import pytest

from jaxdl.data import delayed_recall as dr


@pytest.mark.parametrize("distractors", [0, 5])
@pytest.mark.parametrize("lag", [0, 1, 7, 19])
def test_the_answer_is_the_token_lag_steps_back_and_nothing_else(lag, distractors):
    symbols, length = 6, 20
    batch = dr.recall_batch(np.random.default_rng(0), 300, lag, length, symbols, distractors)
    tokens_BT, label_B = batch["tokens"], batch["label"]
    assert tokens_BT.shape == (300, length) and tokens_BT.dtype == np.int32 and label_B.dtype == np.int32
    np.testing.assert_array_equal(tokens_BT[:, length - 1 - lag], label_B + 1)
    is_symbol_BT = (tokens_BT >= 1) & (tokens_BT <= symbols)
    np.testing.assert_array_equal(is_symbol_BT.sum(1), 1)  # the one symbol: no other place could answer
    others = np.delete(tokens_BT, length - 1 - lag, axis=1)
    if distractors:
        assert others.min() >= 1 + symbols and others.max() < dr.vocab_size(symbols, distractors)
        assert len(np.unique(others)) == distractors
    else:
        assert (others == dr.BLANK).all()
    assert set(np.unique(label_B)) == set(range(symbols))


def test_training_batches_are_a_pure_function_of_seed_lag_and_step():
    make = lambda seed, lag: dr.train_batches(16, lag, 12, 4, 3, seed)
    a, again = make(0, 5), make(0, 5)
    for s in (0, 3, 1000):
        for k in ("tokens", "label"):
            np.testing.assert_array_equal(a[s][k], again[s][k])
    assert not np.array_equal(a[0]["tokens"], a[1]["tokens"])  # each step is new
    assert not np.array_equal(a[0]["tokens"], make(1, 5)[0]["tokens"])  # another seed, other sequences
    assert not np.array_equal(a[0]["tokens"], make(0, 4)[0]["tokens"])  # another lag, another stream
    test = dr.test_set(16, 5, 12, 4, 3, 0)
    assert not np.array_equal(test["tokens"], a[0]["tokens"])  # the test stream is not a training step's


def test_a_lag_needs_a_longer_sequence():
    with pytest.raises(ValueError, match="lag 5"):
        dr.recall_batch(np.random.default_rng(0), 2, 5, 5, 4, 0)
