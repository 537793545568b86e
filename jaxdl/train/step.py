"""Pure, jitted training steps built from a task's loss function.

    loss_fn(params, batch, rng) -> (scalar loss, {name: scalar metric})
    train_step(state, batch) -> (state, metrics)      # state donated
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxdl.train.state import TrainState

LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
GradFn = Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]]


def ema_extras(params: Any) -> dict:
    """The state extras an EMA starts from: a copy of the params (not the same buffers, which are donated)."""
    return {"ema": jax.tree.map(jnp.copy, params)}


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """The EMA decay at `step`: min(decay, (1 + step) / (10 + step)), so early averages are not stuck at init."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, grad_fn: GradFn | None = None,
                    many: bool = False, jit: bool = True, ema_decay: float | None = None):
    """One optimizer step; the step's key is fold_in(seed key, step), so resumes are exact.

    grad_fn: (params, batch, rng) -> (grads, metrics); default `jax.grad(loss_fn, has_aux=True)`.
        Anything that returns gradients shaped like params works (e.g. backpropagation by hand).
    ema_decay: also keep an exponential moving average of the params in `state.extras["ema"]`
        (create the state with `extras=ema_extras(params)`), decay `ema_decay_at(step, ema_decay)`.
    many: train N models at once: `jax.vmap` over a stacked state (`stack_states`) and a batch
        with a leading model axis; metrics come back per model. One compile for any N.
    """
    grad_fn = grad_fn or jax.grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        grads, metrics = grad_fn(state.params, batch, state.step_key())
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        extras = state.extras
        if ema_decay is not None:
            rate = 1.0 - ema_decay_at(state.step, ema_decay)
            extras = {**extras, "ema": optax.incremental_update(params, extras["ema"], rate)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, extras=extras), metrics

    step = jax.vmap(train_step) if many else train_step
    return jax.jit(step, donate_argnums=0) if jit else step
