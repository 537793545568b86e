"""A PyTorch reference for jaxdl's `RecurrentLM`, for parity tests and speed comparisons only.

torch is never a runtime dependency of jaxdl: this module is imported by `benchmarks/` scripts and
by tests that `pytest.importorskip("torch")` first.

`TorchLM` is nn.Embedding -> nn.RNN/LSTM/GRU(batch_first=True) -> nn.Linear, the same network as
`jaxdl.models.recurrent.RecurrentLM` without dropout. `lm_params_to_torch` copies a RecurrentLM's
Flax params into it (embedding table as is, the recurrent stack through `params_to_torch`, the
Dense kernel transposed), so the two compute the same logits. `lm_loss` and `lm_evaluate` are
the torch side of `jaxdl.tasks.language_model.LanguageModel.loss` / `.evaluate`: the mean
next-token cross-entropy of a `(B, T + 1)` batch, and the masked mean over `eval_windows` batches.
`load_checked` loads a converted state dict after checking its names and shapes (torch_gpt.py too).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from jaxdl.convert.recurrent import params_to_torch

RNNS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class TorchLM(nn.Module):
    """Embedding -> `layers` recurrent layers (PyTorch's cells, zero initial state) -> vocabulary logits."""

    def __init__(self, vocab_size: int, cell: str = "lstm", embed: int = 64, hidden: int = 256, layers: int = 2):
        super().__init__()
        if cell not in RNNS:
            raise ValueError(f"unknown cell {cell!r}: use one of {', '.join(RNNS)}")
        self.cell, self.layers = cell, layers
        self.embedding = nn.Embedding(vocab_size, embed)
        self.rnn = RNNS[cell](embed, hidden, num_layers=layers, batch_first=True)  # nn.RNN: tanh, as jaxdl's
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens_BT: torch.Tensor) -> torch.Tensor:
        y_BTH, _ = self.rnn(self.embedding(tokens_BT))
        return self.head(y_BTH)


def lm_params_to_torch(params: Mapping[str, Any], module: TorchLM) -> TorchLM:
    """Load the Flax params of a `RecurrentLM` (same sizes, dropout aside) into `module` in place; returns it."""
    p = params.get("params", params)
    arr = lambda x: torch.tensor(np.asarray(x, np.float32))  # a copy: jax arrays are read-only
    state = {"embedding.weight": arr(p["embedding"]["embedding"]),   # (vocab, embed) in both
             "head.weight": arr(np.asarray(p["head"]["kernel"]).T),  # Dense (in, out) -> Linear (out, in)
             "head.bias": arr(p["head"]["bias"])}
    state.update({f"rnn.{k}": arr(v) for k, v in params_to_torch(p["rnn"], module.layers).items()})
    return load_checked(module, state)


def load_checked(module: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load `state` (converted from jaxdl params) into `module` in place, after checking it has exactly the
    module's parameter names and shapes (a ValueError naming the first mismatch otherwise); returns it."""
    mine = module.state_dict()
    if set(state) != set(mine):
        raise ValueError(f"parameter names differ: {sorted(set(state) ^ set(mine))}")
    for name, v in state.items():
        if tuple(v.shape) != tuple(mine[name].shape):
            raise ValueError(f"{name}: torch {tuple(mine[name].shape)} vs jaxdl {tuple(v.shape)}")
    module.load_state_dict(state, strict=True)
    return module


def as_tokens(tokens: np.ndarray) -> torch.Tensor:
    """Token ids for nn.Embedding (int64)."""
    return torch.from_numpy(np.asarray(tokens, np.int64))


def lm_loss(module: TorchLM, tokens_BT1: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of a `(B, T + 1)` batch: tokens ..T predict 1..T+1."""
    logits_BTV = module(tokens_BT1[:, :-1])
    return F.cross_entropy(logits_BTV.reshape(-1, logits_BTV.shape[-1]), tokens_BT1[:, 1:].reshape(-1))


@torch.no_grad()
def lm_evaluate(module: TorchLM, batches: Iterable[Mapping[str, np.ndarray]],
                tokens_per_char: float = 1.0) -> dict[str, float]:
    """loss (nats per token), bpc (bits per token times tokens per character), perplexity and accuracy
    over every masked-in target of `eval_windows` batches, each window from a zero state: the sum of
    masked cross-entropy / the number of masked targets, as LanguageModel.evaluate."""
    was_training = module.training
    module.eval()
    nll, hits, n = 0.0, 0, 0
    for batch in batches:
        tokens_BT1, mask_BT = as_tokens(batch["tokens"]), torch.from_numpy(np.asarray(batch["mask"], bool))
        logits_BTV = module(tokens_BT1[:, :-1])
        targets_BT = tokens_BT1[:, 1:]
        nll_BT = F.cross_entropy(logits_BTV.transpose(1, 2), targets_BT, reduction="none")
        nll += float(torch.where(mask_BT, nll_BT, 0.0).sum())
        hits += int(((logits_BTV.argmax(-1) == targets_BT) & mask_BT).sum())
        n += int(mask_BT.sum())
    module.train(was_training)
    loss = nll / n
    return {"loss": loss, "bpc": loss / math.log(2) * tokens_per_char, "perplexity": math.exp(min(loss, 50.0)),
            "accuracy": hits / n}
