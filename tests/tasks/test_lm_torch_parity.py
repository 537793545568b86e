"""RecurrentLM + LanguageModel vs the PyTorch reference (benchmarks/torch_lm.py): same initial weights
give the same loss, the same Adam steps with gradient clipping, and the same validation loss."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402

from benchmarks.torch_lm import TorchLM, as_tokens, lm_evaluate, lm_loss, lm_params_to_torch  # noqa: E402
from jaxdl.data.text import eval_windows, load_text, window_batches  # noqa: E402
from jaxdl.models.recurrent import RecurrentLM  # noqa: E402
from jaxdl.tasks.language_model import LanguageModel  # noqa: E402
from jaxdl.train import TrainState, make_optimizer, make_train_step  # noqa: E402

torch.set_num_threads(2)

EMBED, HIDDEN, LAYERS, SEQ, BATCH = 16, 32, 2, 16, 4
LR = 2e-3
CLIP = 0.1  # below the gradients' global norm (0.25..0.8 here), so clipping really acts at every step


@pytest.fixture(scope="module")
def data():
    return load_text("shakespeare")


def _pair(data, cell, seed=0):
    model = RecurrentLM(data.tokenizer.vocab_size, cell, EMBED, HIDDEN, LAYERS, dropout=0.0)
    task = LanguageModel(model)
    batches = map(window_batches(data.train, BATCH, SEQ, seed).__getitem__, itertools.count())
    params = task.init(jax.random.key(seed), {"tokens": np.zeros((BATCH, SEQ + 1), np.int32)})
    net = lm_params_to_torch(params, TorchLM(data.tokenizer.vocab_size, cell, EMBED, HIDDEN, LAYERS))
    return task, params, net, batches


@pytest.mark.parametrize("cell", ["gru", "rnn"])  # the LSTM: the first step of the test below
def test_same_initial_weights_same_loss(data, cell):
    task, params, net, batches = _pair(data, cell)
    batch = next(batches)
    ours = float(jax.jit(task.loss)(params, batch, jax.random.key(0))[0])
    with torch.no_grad():
        theirs = lm_loss(net, as_tokens(batch["tokens"])).item()
    assert abs(ours - theirs) < 1e-5, (ours, theirs)
    assert abs(ours - np.log(data.tokenizer.vocab_size)) < 0.5  # an untrained model: about log(vocab)


def test_same_losses_over_adam_steps_with_clipping(data):
    """LSTM: the same loss from the same initial weights (1e-5), then after each of 3 steps of Adam(lr 2e-3)
    with global-norm clipping on the same batches (1e-4), and the same validation loss (the benchmark's
    definition) after them."""
    task, params, net, batches = _pair(data, "lstm", seed=1)
    optimizer = make_optimizer("adam", LR, 0.0, clip_norm=CLIP)
    start = jax.tree.map(np.array, params)  # the train step donates the state's buffers
    state = TrainState.create(params, optimizer, seed=1)
    train_step = make_train_step(task.loss, optimizer)
    opt = torch.optim.Adam(net.parameters(), lr=LR)  # eps 1e-8, betas (0.9, 0.999): optax's defaults too
    for step in range(4):  # the 4th step's loss is the loss after 3 steps
        batch = next(batches)
        state, metrics = train_step(state, batch)
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(net, as_tokens(batch["tokens"]))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
        assert norm.item() > 2 * CLIP, f"step {step + 1}: clipping must act for the test to mean something"
        ours, theirs = float(metrics["loss"]), loss.item()
        assert abs(ours - theirs) < (1e-5 if step == 0 else 1e-4), (f"after {step} steps", ours, theirs)
    moved = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(start)))
    assert moved > 3 * LR, "the steps must really move the weights"

    valid = data.valid[:SEQ * 9 + 5]  # 9 full windows and a partial one: padding and masking are exercised
    ours_v = task.evaluate(state.params, eval_windows(valid, SEQ, BATCH))
    theirs_v = lm_evaluate(net, eval_windows(valid, SEQ, BATCH))
    assert abs(ours_v["loss"] - theirs_v["loss"]) < 1e-4, (ours_v, theirs_v)
    assert abs(ours_v["bpc"] - theirs_v["bpc"]) < 2e-4
    assert abs(ours_v["accuracy"] - theirs_v["accuracy"]) < 1e-2
