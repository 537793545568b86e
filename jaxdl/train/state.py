"""TrainState: everything that changes during training, as one pytree."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct


# Collections a model updates as it runs rather than by gradients (batch norm's running statistics).
# They live in `TrainState.params` beside "params" (so checkpoints, meshes, `jaxdl.load` and export
# carry them like any weight); the optimizer sees only the rest. A loss that updates them returns the
# new values in its metrics under MODEL_STATE, and the step puts them in place.
MODEL_STATE_COLLECTIONS = ("batch_stats",)
MODEL_STATE = "model_state"


def split_model_state(variables: Any) -> tuple[Any, dict | None]:
    """(what the optimizer trains, the model-state collections or None when there are none)."""
    if not (isinstance(variables, dict) and any(k in variables for k in MODEL_STATE_COLLECTIONS)):
        return variables, None
    trained = {k: v for k, v in variables.items() if k not in MODEL_STATE_COLLECTIONS}
    return trained, {k: v for k, v in variables.items() if k in MODEL_STATE_COLLECTIONS}


def trained_part(variables: Any) -> Any:
    return split_model_state(variables)[0]


class TrainState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32[2] key data of the run's seed; step keys are fold_in(rng, step)
    extras: dict = struct.field(default_factory=dict)  # e.g. EMA params
    skipped: jax.Array = struct.field(default_factory=lambda: jnp.zeros((), jnp.int32))  # updates skipped: non-finite
    bad_streak: jax.Array = struct.field(default_factory=lambda: jnp.zeros((), jnp.int32))  # ... of them in a row

    @classmethod
    def create(cls, params: Any, optimizer: optax.GradientTransformation, seed: int,
               extras: dict | None = None) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(trained_part(params)),
                   rng=jax.random.key_data(jax.random.key(seed)), extras=extras or {})

    def step_key(self) -> jax.Array:
        """The key for this step's random draws: a pure function of (seed, step)."""
        return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def step_of(state: TrainState) -> int:
    """The step count as a Python int (stacked states share one)."""
    return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


def num_params(params: Any) -> int:
    """Trainable numbers only: running statistics are buffers, as PyTorch counts them."""
    return int(sum(x.size for x in jax.tree.leaves(trained_part(params))))


def stack_states(states: list[TrainState]) -> TrainState:
    """N states -> one whose every leaf has a leading model axis, for a vmapped train step."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def unstack_state(state: TrainState, i: int) -> TrainState:
    """Model `i` of a stacked state."""
    return jax.tree.map(lambda x: x[i], state)
