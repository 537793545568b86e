"""Applying a model in training mode whether or not it keeps running statistics (batch norm).

A model whose variables hold `batch_stats` updates them as it trains: its loss applies it with
those collections mutable and hands their new values to the engine in the metrics (under
`jaxdl.train.state.MODEL_STATE`), which keeps them in the train state. Other models apply as usual.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxdl.errors import UsageError
from jaxdl.models.norm import NORMS

from jaxdl.train.state import MODEL_STATE, MODEL_STATE_COLLECTIONS, split_model_state


def apply_training(model: nn.Module, variables: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict]:
    """model.apply(variables, *args, train=True, **kwargs) -> (outputs, metrics to add to the loss's):
    {MODEL_STATE: the updated collections} for a model with running statistics, else {}."""
    if split_model_state(variables)[1] is None:
        return model.apply(variables, *args, train=True, **kwargs), {}
    out, updated = model.apply(variables, *args, train=True, mutable=list(MODEL_STATE_COLLECTIONS), **kwargs)
    return out, {MODEL_STATE: dict(updated)}


def check_norm(kind: str) -> None:
    """A --norm value, or a UsageError naming the choices."""
    if kind not in NORMS:
        raise UsageError(f"unknown --norm {kind!r}: use one of {', '.join(NORMS)}")
