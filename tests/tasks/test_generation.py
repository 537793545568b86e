"""Generation with a transformer's key/value cache: nucleus sampling, stop tokens, the context limit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.errors import UsageError
from jaxdl.models.transformer import DecoderLM
from jaxdl.tasks.language_model import LanguageModel, sample_logits

VOCAB = 11


@functools.lru_cache(maxsize=None)  # one model (and its compiled programs) per setting, for the whole file
def _task(pos="learned", max_len=32, seed=0):
    model = DecoderLM(VOCAB, d_model=32, num_layers=2, num_heads=4, max_len=max_len, pos=pos)
    task = LanguageModel(model)
    return task, task.init(jax.random.key(seed), {"tokens": np.zeros((1, 5), np.int32)})


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    draws = jax.vmap(lambda k: sample_logits(logits, k, 1.0, top_p=0.75))(jax.random.split(jax.random.key(0), 4000))
    assert set(np.unique(draws).tolist()) == {0, 1}  # 0.5 < 0.75 <= 0.5 + 0.3
    np.testing.assert_allclose((draws == 0).mean(), 0.5 / 0.8, atol=0.03)
    only = jax.vmap(lambda k: sample_logits(logits, k, 1.0, top_p=0.1))(jax.random.split(jax.random.key(1), 100))
    assert set(np.unique(only).tolist()) == {0}  # the most likely token always stays
    every = jax.vmap(lambda k: sample_logits(logits, k, 1.0, top_p=1.0))(jax.random.split(jax.random.key(2), 4000))
    assert set(np.unique(every).tolist()) == {0, 1, 2, 3}


def test_cached_greedy_generation_equals_recomputing_the_whole_sequence():
    task, params = _task("rope")  # every positional encoding: tests/models/test_transformer.py
    prompts = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 0, 0]])
    lengths = np.array([5, 3])
    got = task.generate(params, prompts, jax.random.key(0), 12, temperature=0.0, lengths_B=lengths)
    apply = jax.jit(task.model.apply)
    for b in range(2):
        seq = list(prompts[b, :lengths[b]])
        for _ in range(12):  # no cache: the whole sequence through the model for every new token
            padded = np.zeros((1, 17), np.int32)  # causal: what follows the sequence changes nothing
            padded[0, :len(seq)] = seq
            logits, _ = apply(params, jnp.asarray(padded))
            seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
        np.testing.assert_array_equal(got[b], seq[lengths[b]:])


def test_generation_stops_at_the_stop_token():
    task, params = _task()
    key = jax.random.key(3)
    free = task.generate(params, np.array([[1, 2, 3]] * 4), key, 20, temperature=1.0)
    stop = int(free[0, 4])  # a token the first row draws at step 4
    out = task.generate(params, np.array([[1, 2, 3]] * 4), key, 20, temperature=1.0, stop_token=stop)
    for row_free, row in zip(free, out):
        first = np.flatnonzero(row_free == stop)
        end = first[0] if len(first) else 20
        np.testing.assert_array_equal(row[:end + 1], row_free[:end + 1])  # same draws up to the stop
        assert (row[end:] == stop).all()  # then only the stop token


def test_a_prompt_longer_than_the_context_is_refused():
    task, params = _task(max_len=16)
    with pytest.raises(UsageError, match="longer than the model's context of 16"):
        task.generate(params, np.zeros((1, 17), np.int32), jax.random.key(0), 1)


def test_generation_past_the_context_slides_a_window():
    task, params = _task(max_len=16)
    prompts, lengths = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 0, 0, 0]]), np.array([6, 3])
    long_ = task.generate(params, prompts, jax.random.key(0), 40, temperature=0.0, lengths_B=lengths)
    assert long_.shape == (2, 40)
    np.testing.assert_array_equal(long_[:, :10], task.generate(params, prompts, jax.random.key(0), 10,
                                                              temperature=0.0, lengths_B=lengths))
    for b in range(2):  # the second window: the last 8 tokens (half the context) of the first, prefilled again
        row = list(prompts[b, :lengths[b]]) + list(long_[b, :10])
        nxt = task.generate(params, np.array([row[-8:]]), jax.random.key(0), 8, temperature=0.0)
        np.testing.assert_array_equal(long_[b, 10:18], nxt[0])
