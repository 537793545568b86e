"""The language-model task: the validation-loss definition, sampling, and generation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data.text import CharTokenizer, eval_windows
from jaxdl.models.recurrent import RecurrentLM
from jaxdl.tasks.language_model import LanguageModel, sample_logits
from jaxdl.train import TrainState, make_optimizer, make_train_step


def _task(vocab=7, cell="lstm", hidden=16, layers=1, seed=0):
    task = LanguageModel(RecurrentLM(vocab, cell, embed=8, hidden=hidden, layers=layers))
    params = task.init(jax.random.key(seed), {"tokens": np.zeros((1, 5), np.int32)})
    return task, params


def test_validation_loss_is_the_mean_over_every_token_with_windows_from_zero_state():
    task, params = _task()
    tokens = np.random.default_rng(0).integers(0, 7, 50).astype(np.int32)
    got = task.evaluate(params, eval_windows(tokens, seq_len=8, batch_size=3))
    nll, apply = [], jax.jit(task.model.apply)
    for start in range(0, 49, 8):  # each window alone, from a zero state, in float64 afterwards
        window = tokens[start:start + 9]
        logits, _ = apply(params, jnp.asarray(window[None, :-1]))
        logp = jax.nn.log_softmax(np.asarray(logits[0], np.float64), axis=-1)
        nll.extend(-np.asarray(logp)[np.arange(len(window) - 1), window[1:]])
    assert len(nll) == 49
    np.testing.assert_allclose(got["loss"], np.mean(nll), rtol=1e-5)
    np.testing.assert_allclose(got["bpc"], np.mean(nll) / np.log(2), rtol=1e-5)


def test_sampling_greedy_top_k_and_temperature():
    logits = jnp.log(jnp.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    key = jax.random.key(0)
    np.testing.assert_array_equal(sample_logits(logits, key, 0.0), [1, 0])
    np.testing.assert_array_equal(sample_logits(logits, key, 5.0, top_k=1), [1, 0])
    draws = jax.vmap(lambda k: sample_logits(logits, k, 1.0, top_k=2))(jax.random.split(key, 4000))
    assert set(np.unique(draws[:, 0]).tolist()) == {1, 2} and set(np.unique(draws[:, 1]).tolist()) == {0, 2}
    np.testing.assert_allclose((draws[:, 0] == 1).mean(), 0.6 / 0.9, atol=0.03)  # renormalised over the top 2


def test_generation_is_deterministic_for_a_key():
    task, params = _task()
    prompt = np.array([[1, 2, 3]])
    a = task.generate(params, prompt, jax.random.key(5), 20, temperature=1.0)
    b = task.generate(params, prompt, jax.random.key(5), 20, temperature=1.0)
    c = task.generate(params, prompt, jax.random.key(6), 20, temperature=1.0)
    assert a.shape == (1, 20)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_prompts_of_different_lengths_generate_as_if_alone(cell):
    task, params = _task(cell=cell)
    short, long_ = np.array([4, 1]), np.array([2, 5, 6, 0, 3])
    batch = np.zeros((2, 5), np.int32)
    batch[0, :2], batch[1] = short, long_
    key = jax.random.key(1)
    together = task.generate(params, batch, key, 12, temperature=0.0, lengths_B=np.array([2, 5]))
    np.testing.assert_array_equal(together[0], task.generate(params, short[None], key, 12, temperature=0.0)[0])
    np.testing.assert_array_equal(together[1], task.generate(params, long_[None], key, 12, temperature=0.0)[0])


def test_greedy_decoding_reproduces_a_learned_repeated_string():
    phrase = "the cat sat on the mat. "
    tok = CharTokenizer(phrase)
    ids = tok.encode(phrase * 20)
    task = LanguageModel(RecurrentLM(tok.vocab_size, "lstm", embed=16, hidden=64, layers=1))
    optimizer = make_optimizer("adam", 1e-2, 0.0)
    rng = np.random.default_rng(0)
    windows = lambda: {"tokens": np.stack([ids[s:s + 33] for s in rng.integers(0, len(ids) - 33, 16)])}
    state = TrainState.create(task.init(jax.random.key(0), windows()), optimizer, 0)
    step = make_train_step(task.loss, optimizer)
    for _ in range(150):
        state, metrics = step(state, windows())
    assert float(metrics["loss"]) < 0.2  # the first characters of a window are ambiguous
    prompt = "the cat sat on the"
    out = task.generate(state.params, tok.encode(prompt)[None], jax.random.key(0), 2 * len(phrase), temperature=0.0)
    assert tok.decode(out[0]) == (" mat. " + phrase * 2)[:2 * len(phrase)]


def test_loss_is_next_token_cross_entropy():
    task, params = _task()
    batch = {"tokens": np.random.default_rng(1).integers(0, 7, (2, 9)).astype(np.int32)}
    loss, metrics = task.loss(params, batch, jax.random.key(0))
    logits, _ = task.model.apply(params, batch["tokens"][:, :-1])
    want = optax.softmax_cross_entropy_with_integer_labels(logits, batch["tokens"][:, 1:]).mean()
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert metrics["loss"] == loss
