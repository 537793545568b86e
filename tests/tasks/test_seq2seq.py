"""The sequence-to-sequence task: the masked loss, cached greedy decoding, the exact-match definition."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data import sequence_tasks as st
from jaxdl.models.transformer import EncoderDecoder
from jaxdl.tasks.seq2seq import Seq2Seq


@pytest.fixture(scope="module")
def setup():
    task = Seq2Seq(EncoderDecoder(st.VOCAB_SIZE, d_model=32, encoder_layers=1, decoder_layers=2, num_heads=4,
                                  max_len=16), st.BOS, st.EOS)
    batch = st.make_batch("add", ["1+2", "35+47", "905+118"], max_len=3)
    params = task.init(jax.random.key(0), batch)
    params = jax.tree.map(lambda p: p * 3, params)  # sharper logits: varied greedy outputs
    return task, params, batch


def test_loss_is_the_mean_cross_entropy_over_the_target_and_eos(setup):
    task, params, batch = setup
    loss, metrics = task.loss(params, batch, jax.random.key(0))
    logits = task.model.apply(params, batch["source"], batch["source_lengths"], batch["target_in"])
    nll = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, batch["target_out"]), np.float64)
    want = [nll[b, t] for b in range(3) for t in range(nll.shape[1]) if batch["target_mask"][b, t]]
    assert len(want) == (1 + 1) + (2 + 1) + (4 + 1)  # "3", "82", "1023", each with its EOS
    np.testing.assert_allclose(loss, np.mean(want), rtol=1e-5)
    assert 0 <= metrics["token_accuracy"] <= 1


def test_cached_greedy_decoding_equals_recomputing_the_target_prefix(setup):
    task, params, batch = setup
    got = task.generate(params, batch["source"], batch["source_lengths"], 6)
    apply = jax.jit(task.model.apply)
    for b in range(3):
        prefix = [st.BOS]
        for _ in range(6):  # no cache: the whole target prefix through the decoder for each token
            padded = np.zeros((1, 7), np.int32)
            padded[0, :len(prefix)] = prefix
            logits = apply(params, batch["source"][b:b + 1], batch["source_lengths"][b:b + 1], jnp.asarray(padded))
            prefix.append(int(np.argmax(logits[0, len(prefix) - 1])))
            if prefix[-1] == st.EOS:
                break
        want = prefix[1:] + [st.EOS] * (7 - len(prefix))  # after EOS the row is EOS
        np.testing.assert_array_equal(got[b], want)


def test_exact_match_needs_every_target_token_and_the_eos(setup):
    task, params, batch = setup
    m = task.evaluate(params, batch, chunk=2)  # chunks of 2, 1: the same as one batch
    out = m["outputs"]["tokens"]
    assert out.shape == batch["target_out"].shape
    targets = [st.encode(st.target_for("add", st.decode(s))).tolist() + [st.EOS] for s in batch["source"]]
    want = [o[:len(t)].tolist() == t for o, t in zip(out, targets)]
    np.testing.assert_array_equal(m["outputs"]["exact"], want)
    cheat = {**batch, "target_out": np.where(batch["target_mask"], out, batch["target_out"])}
    assert task.evaluate(params, cheat)["exact_match"] == 1.0  # outputs equal to the targets count as exact
