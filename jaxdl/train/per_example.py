"""Per-example gradients (`jax.vmap` over the batch) and the DP-SGD gradient built from them.

Works with any task loss in the engine's convention,

    loss_fn(params, batch, rng) -> (scalar loss, {name: scalar metric})

where every leaf of `batch` has a leading example axis B. Each example is shown to
`loss_fn` as a batch of one (leading axis 1 kept), so a loss written for batches
needs no change. `private_grad_fn` plugs into the engine as
`make_train_step(loss_fn, optimizer, grad_fn=private_grad_fn(loss_fn, C, sigma))`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdl.errors import UsageError
from jaxdl.train.step import GradFn, LossFn

# Example i's key is fold_in(rng, i), i < B; the noise key uses an index no batch can reach
# (fold_in takes a uint32), so a private step sees exactly the keys `per_example_grads` uses.
_NOISE_STREAM = 2**32 - 1


def _batch_size(batch: Any) -> int:
    """B, the shared leading axis of every leaf of `batch` (static: read from shapes)."""
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(batch)}
    if not sizes or None in sizes or len(sizes) > 1:
        raise UsageError(f"per-example gradients need a batch whose every leaf has the same leading example "
                         f"axis; got leading sizes {sorted(sizes, key=str)}: add the axis or fix the batch")
    (size,) = sizes
    if size == 0:
        raise UsageError("per-example gradients need at least one example; got an empty batch")
    return size


def per_example_grads(loss_fn: LossFn, params: Any, batch: Any, rng: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
    """(grads_B, metrics_B): each example's gradient and metrics, stacked on a new leading axis B.

    Example i is `loss_fn(params, batch_of_one_i, fold_in(rng, i))`: a key of its own, so dropout
    masks differ between examples as they do in an ordinary batch.
    """
    grad_fn = jax.grad(loss_fn, has_aux=True)

    def one(example: Any, i: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        batch_of_one = jax.tree.map(lambda x: jnp.expand_dims(x, 0), example)
        return grad_fn(params, batch_of_one, jax.random.fold_in(rng, i))

    return jax.vmap(one)(batch, jnp.arange(_batch_size(batch)))


def per_example_grad_norms(loss_fn: LossFn, params: Any, batch: Any, rng: jax.Array) -> jax.Array:
    """norms_B: each example's gradient norm, L2 over all leaves together (the norm DP-SGD clips)."""
    grads_B, _ = per_example_grads(loss_fn, params, batch, rng)
    return jax.vmap(optax.global_norm)(grads_B)


def private_grad_fn(loss_fn: LossFn, clip_norm: float, noise_multiplier: float) -> GradFn:
    """The DP-SGD gradient (Abadi et al. 2016) as an engine GradFn `(params, batch, rng) -> (grads, metrics)`.

    grads = (sum_i clip(g_i, clip_norm) + N(0, (noise_multiplier * clip_norm)^2 I)) / B, where clip scales an
    example's gradient down to global norm `clip_norm` when it is longer. Metrics: the mean over examples of
    `loss_fn`'s metrics, `grad_norm` (mean per-example norm before clipping) and `clipped` (fraction clipped).
    The privacy accounting (epsilon for a number of steps and a sampling rate) is not done here.
    """
    clip_norm = _positive_finite("clip_norm", clip_norm, allow_zero=False)
    noise_multiplier = _positive_finite("noise_multiplier", noise_multiplier, allow_zero=True)
    noise_std = noise_multiplier * clip_norm

    def grad_fn(params: Any, batch: Any, rng: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        batch_size = _batch_size(batch)
        grads_B, metrics_B = per_example_grads(loss_fn, params, batch, rng)
        norms_B = jax.vmap(optax.global_norm)(grads_B)
        clipped_sum, num_clipped = optax.per_example_global_norm_clip(grads_B, clip_norm)
        if noise_std > 0:  # a Python branch: sigma = 0 draws nothing, so it is exactly clipped SGD
            clipped_sum = _add_gaussian_noise(clipped_sum, noise_std, jax.random.fold_in(rng, _NOISE_STREAM))
        grads = jax.tree.map(lambda g: g / batch_size, clipped_sum)
        metrics = {name: jnp.mean(value) for name, value in metrics_B.items()}
        metrics["grad_norm"] = jnp.mean(norms_B)
        metrics["clipped"] = num_clipped.astype(jnp.float32) / batch_size
        return grads, metrics

    return grad_fn


def _add_gaussian_noise(tree: Any, std: float, rng: jax.Array) -> Any:
    """tree + independent N(0, std^2) in every coordinate, one key per leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(rng, len(leaves))
    noisy = [x + std * jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


def _positive_finite(name: str, value: float, *, allow_zero: bool) -> float:
    """`value` as a float, or a UsageError naming the argument and the range it must lie in."""
    bound = ">= 0" if allow_zero else "> 0"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a finite number {bound}; got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise UsageError(f"{name} must be a finite number {bound}; got {value!r}")
    return number
