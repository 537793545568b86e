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
                   clip_norm: float = 0.0) -> optax.GradientTransformation:
    sched = make_schedule(lr, schedule, warmup_steps, total_steps)
    l2 = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
    if name == "adam":
        core = [*l2, optax.scale_by_adam(), optax.scale_by_learning_rate(sched)]
    elif name == "adamw":
        core = [optax.adamw(sched, weight_decay=weight_decay)]
    elif name == "sgd":
        core = [*l2, optax.sgd(sched, momentum=momentum or None)]
    elif name == "rmsprop":  # PyTorch defaults: alpha 0.99, eps 1e-8 added after the sqrt
        core = [*l2, optax.rmsprop(sched, decay=0.99, eps=1e-8, eps_in_sqrt=False)]
    else:
        raise UsageError(f"unknown optimizer {name!r}: use adam, adamw, sgd or rmsprop")
    clip = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    return optax.chain(*clip, *core)
