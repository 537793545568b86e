"""Supervised learning on vectors (MLPs): mse regression, binary and multi-class classification.

The gradient comes from `jax.grad` (autodiff) or from backpropagation written by
hand (`jaxdl.models.backprop`); either feeds the same optax update.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdl.models import backprop
from jaxdl.models.mlp import MLP
from jaxdl.tasks.model_state import apply_training

LOSS_FOR_TASK = {"xor": "bce", "sine": "mse", "digits": "softmax_ce"}
MAIN_METRIC = {"bce": "accuracy", "mse": "mse", "softmax_ce": "accuracy"}


def optax_loss(name: str, logits: jax.Array, y: jax.Array) -> jax.Array:
    if name == "mse":
        return optax.squared_error(logits, y).mean()
    if name == "bce":
        return optax.sigmoid_binary_cross_entropy(logits, y).mean()
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _metrics(name: str, loss: jax.Array, logits: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    if name == "mse":
        return {"loss": loss, "mse": jnp.mean((logits - y) ** 2)}
    predicted = (logits > 0).astype(y.dtype) if name == "bce" else logits.argmax(-1)
    return {"loss": loss, "accuracy": jnp.mean(predicted == y)}


class VectorTask:
    def __init__(self, model: MLP, loss: str, backprop_mode: str = "autodiff"):
        self.model, self.loss_name, self.backprop_mode = model, loss, backprop_mode
        self.main_metric = MAIN_METRIC[loss]
        self._eval_one_model = jax.jit(self._evaluate_fn)
        self._eval_many_models = jax.jit(jax.vmap(self._evaluate_fn, in_axes=(0, None)))
        self._init = jax.jit(self.model.init)  # one compile for every seed, not one per op

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        return self._init(rng, batch["x"])

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict]:
        logits, model_state = apply_training(self.model, params, batch["x"])
        loss = optax_loss(self.loss_name, logits, batch["y"])
        return loss, {**_metrics(self.loss_name, loss, logits, batch["y"]), **model_state}

    def grad_fn(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[Any, dict]:
        """Backpropagation by hand: forward keeping pre-activations, chain rule backwards."""
        loss, logits, grads = backprop.loss_and_grad(params, batch["x"], batch["y"], self.loss_name,
                                                     self.model.activation)
        return grads, _metrics(self.loss_name, loss, logits, batch["y"])

    @property
    def step_grad_fn(self):
        return self.grad_fn if self.backprop_mode == "manual" else None

    def _evaluate_fn(self, params: Any, data: dict[str, jax.Array]) -> tuple[dict, jax.Array]:
        logits = self.model.apply(params, data["x"])  # evaluation mode: running statistics, if any
        loss = optax_loss(self.loss_name, logits, data["y"])
        return _metrics(self.loss_name, loss, logits, data["y"]), logits

    def evaluate(self, params: Any, data: dict[str, Any], many: bool = False) -> dict[str, Any]:
        """Metrics on the whole split (per model when `many`), plus the model's outputs."""
        metrics, outputs = (self._eval_many_models if many else self._eval_one_model)(params, data)
        return {**jax.device_get(metrics), "outputs": jax.device_get(outputs)}
