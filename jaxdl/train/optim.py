"""Optimizers by name, with optional warmup/cosine schedule and gradient clipping.

`adam` adds `weight_decay * param` to the gradient before the moments (PyTorch's
`Adam(weight_decay=...)`, coupled L2); `adamw` decays the weights directly
(decoupled, scaled by the learning rate, as PyTorch's AdamW). `sgd` and
`rmsprop` follow PyTorch's conventions too (coupled L2; eps outside the sqrt).
"""

from __future__ import annotations

import optax

from jaxdl.errors import UsageError


def make_schedule(lr: float, schedule: str, warmup_steps: int, total_steps: int) -> optax.Schedule:
    if schedule == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), optax.constant_schedule(lr)],
                                    [warmup_steps])
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1))
    raise UsageError(f"unknown schedule {schedule!r}: use constant or cosine")


def make_optimizer(name: str, lr: float, weight_decay: float = 0.0, *, momentum: float = 0.9,
                   schedule: str = "constant", warmup_steps: int = 0, total_steps: int = 1,
                   clip_norm: float = 0.0, hyperparams_as_data: bool = False) -> optax.GradientTransformation:
    """An optax optimizer by name.

    With `hyperparams_as_data`, the learning rate and weight decay live in the optimizer state
    (`optax.inject_hyperparams`), so models stacked for one vmapped step can each carry their own.
    """
    if name not in ("adam", "adamw", "sgd", "rmsprop"):
        raise UsageError(f"unknown optimizer {name!r}: use adam, adamw, sgd or rmsprop")
    sched = make_schedule(lr, schedule, warmup_steps, total_steps)

    def build(learning_rate, weight_decay):
        l2 = [optax.add_decayed_weights(weight_decay)] if hyperparams_as_data or weight_decay else []
        if name == "adam":
            core = [*l2, optax.scale_by_adam(), optax.scale_by_learning_rate(learning_rate)]
        elif name == "adamw":
            core = [optax.adamw(learning_rate, weight_decay=weight_decay)]
        elif name == "sgd":
            core = [*l2, optax.sgd(learning_rate, momentum=momentum or None)]
        else:  # rmsprop, PyTorch defaults: alpha 0.99, eps 1e-8 added after the sqrt
            core = [*l2, optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False)]
        clip = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
        return optax.chain(*clip, *core)

    if hyperparams_as_data:
        return optax.inject_hyperparams(build)(learning_rate=sched if schedule != "constant" or warmup_steps else lr,
                                               weight_decay=weight_decay)
    return build(sched, weight_decay)
