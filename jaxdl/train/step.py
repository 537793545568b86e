"""Pure, jitted training steps built from a task's loss function.

    loss_fn(params, batch, rng) -> (scalar loss, {name: scalar metric})
    train_step(state, batch) -> (state, metrics)      # state donated

A model with running statistics (batch norm: `state.MODEL_STATE_COLLECTIONS` in its variables)
is differentiated and updated in its other collections only; its loss returns the collections'
new values in its metrics under `state.MODEL_STATE`, and the step keeps them (or, on a skipped
step, the old ones).

A step whose loss or gradient is not finite leaves params, optimizer state and
EMA as they were (the step counter still advances, so the data order and keys
stay those of an uninterrupted run) and counts itself in `state.skipped`.
After `max_bad_steps` such steps in a row it stops updating for good; `fit`
sees `state.bad_streak` and ends the run.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxdl.train.state import MODEL_STATE, TrainState, split_model_state

LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
GradFn = Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]]


def ema_extras(params: Any) -> dict:
    """The state extras an EMA starts from: a copy of the params (not the same buffers, which are donated)."""
    return {"ema": jax.tree.map(jnp.copy, params)}


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """The EMA decay at `step`: min(decay, (1 + step) / (10 + step)), so early averages are not stuck at init."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)] or [jnp.array(True)]))


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """`train_step(state, batch)`, jitted with the state donated; `fit` recompiles it for its mesh
    (`jit_for`) and may swap the gradient (`with_grad_fn`, for the differentially-private step)."""

    loss_fn: LossFn
    optimizer: optax.GradientTransformation
    grad_fn: GradFn | None = None  # None: jax.grad(loss_fn)
    many: bool = False
    ema_decay: float | None = None
    max_bad_steps: int = 0  # 0: never stop updating, however many non-finite steps in a row

    def pure(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        """The step as a pure function (vmapped over models when `many`)."""
        return (jax.vmap(self._one) if self.many else self._one)(state, batch)

    def _one(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        trained, model_state = split_model_state(state.params)
        if model_state is None:
            grad_fn = self.grad_fn or jax.grad(self.loss_fn, has_aux=True)
            grads, metrics = grad_fn(state.params, batch, state.step_key())
        else:
            if self.grad_fn is not None:
                raise ValueError("a model with running statistics (batch norm) takes its gradients from jax.grad, "
                                 "not from a grad_fn")
            loss_fn = lambda p, b, k: self.loss_fn({**p, **model_state}, b, k)
            grads, metrics = jax.grad(loss_fn, has_aux=True)(trained, batch, state.step_key())
            metrics = dict(metrics)
            new_model_state = metrics.pop(MODEL_STATE)
        finite = all_finite(grads) & all_finite(metrics.get("loss", 0.0))
        if model_state is not None:
            finite = finite & all_finite(new_model_state)
        stopped = (state.bad_streak >= self.max_bad_steps) if self.max_bad_steps else jnp.array(False)
        ok = finite & ~stopped

        def update(_: None) -> tuple[Any, Any, dict]:
            updates, opt_state = self.optimizer.update(grads, state.opt_state, trained)
            params = optax.apply_updates(trained, updates)
            if model_state is not None:
                params = {**params, **new_model_state}
            extras = state.extras
            if self.ema_decay is not None:
                rate = 1.0 - ema_decay_at(state.step, self.ema_decay)
                extras = {**extras, "ema": optax.incremental_update(params, extras["ema"], rate)}
            return params, opt_state, extras

        # a branch, not a select over every array: both cheaper to compile and to run
        params, opt_state, extras = jax.lax.cond(ok, update, lambda _: (state.params, state.opt_state, state.extras),
                                                 None)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, extras=extras,
                             skipped=state.skipped + (~ok).astype(jnp.int32),
                             bad_streak=jnp.where(ok, 0, state.bad_streak + 1)), metrics

    @functools.cached_property
    def _jitted(self) -> Callable:
        return jax.jit(self.pure, donate_argnums=0)

    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        return self._jitted(state, batch)

    def lower(self, state: TrainState, batch: Any):
        return self._jitted.lower(state, batch)

    def jit_for(self, state_shardings: Any, batch_sharding: Any, metrics_sharding: Any) -> Callable:
        """The step jitted with these in/out shardings, the state donated (its buffers reused in place)."""
        return jax.jit(self.pure, in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, metrics_sharding), donate_argnums=0)

    def replace(self, **changes: Any) -> "TrainStep":
        return dataclasses.replace(self, **changes)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, grad_fn: GradFn | None = None,
                    many: bool = False, jit: bool = True, ema_decay: float | None = None,
                    max_bad_steps: int = 0) -> TrainStep | Callable:
    """One optimizer step; the step's key is fold_in(seed key, step), so resumes are exact.

    grad_fn: (params, batch, rng) -> (grads, metrics); default `jax.grad(loss_fn, has_aux=True)`.
        Anything that returns gradients shaped like params works (e.g. backpropagation by hand).
    ema_decay: also keep an exponential moving average of the params in `state.extras["ema"]`
        (create the state with `extras=ema_extras(params)`), decay `ema_decay_at(step, ema_decay)`.
    many: train N models at once: `jax.vmap` over a stacked state (`stack_states`) and a batch
        with a leading model axis; metrics come back per model. One compile for any N.
    max_bad_steps: after this many non-finite steps in a row, stop updating (`fit` sets it).
    jit: False gives the pure function, for callers that jit or vmap it themselves.
    """
    step = TrainStep(loss_fn, optimizer, grad_fn, many, ema_decay, max_bad_steps)
    return step if jit else step.pure
