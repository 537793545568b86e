"""Pure, jitted training steps built from a task's loss function.

    loss_fn(params, batch, rng) -> (scalar loss, {name: scalar metric})
    train_step(state, batch) -> (state, metrics)      # state donated
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from jaxdl.train.state import TrainState

LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
GradFn = Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]]


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, grad_fn: GradFn | None = None,
                    many: bool = False, jit: bool = True):
    """One optimizer step; the step's key is fold_in(seed key, step), so resumes are exact.

    grad_fn: (params, batch, rng) -> (grads, metrics); default `jax.grad(loss_fn, has_aux=True)`.
        Anything that returns gradients shaped like params works (e.g. backpropagation by hand).
    many: train N models at once: `jax.vmap` over a stacked state (`stack_states`) and a batch
        with a leading model axis; metrics come back per model. One compile for any N.
    """
    grad_fn = grad_fn or jax.grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        grads, metrics = grad_fn(state.params, batch, state.step_key())
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    step = jax.vmap(train_step) if many else train_step
    return jax.jit(step, donate_argnums=0) if jit else step
