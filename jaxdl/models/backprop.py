"""Backpropagation by hand for `MLP`: the gradients jax.grad gives, written out step by step.

Layer l of an MLP computes z_l = a_l W_l + b_l from its input a_l (a_0 = x), and the next
layer's input is a_{l+1} = sigma(z_l); the last layer's z is the logits. Training is four steps:

1. Forward pass (`forward`): run the layers in order, keeping each layer's input a_l and
   pre-activation z_l, because the backward pass needs both.
2. Loss (`LOSSES`): a scalar L(logits, y), and its derivative dL/dlogits, which starts the
   backward pass. Each loss here pairs with its output non-linearity so that derivative is short:
   mean squared error gives 2 (pred - y) / N, binary cross-entropy on logits (sigmoid(z) - y) / N,
   softmax cross-entropy (softmax(z) - onehot(y)) / B.
3. Backward pass (`backward`): the chain rule, from the last layer to the first. Given
   dL/dz_l (a B x O matrix, one row per example):
       dL/dW_l = a_l^T dL/dz_l          (sums the per-example contributions over the batch)
       dL/db_l = sum over the batch of dL/dz_l
       dL/da_l = dL/dz_l W_l^T
       dL/dz_{l-1} = dL/da_l * sigma'(z_{l-1})   (elementwise: sigma acts on each unit alone)
   `ACTIVATION_DERIVATIVES` holds each sigma' in closed form.
4. Weight update: the gradients have exactly the pytree structure of `MLP.init`'s params, so any
   optax optimizer consumes them as it would jax.grad's:
       updates, opt_state = optimizer.update(grads, opt_state, params)
       params = optax.apply_updates(params, updates)

The tests check every activation and loss against jax.grad and finite differences in float64.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxdl.models.mlp import ACTIVATIONS, check_activation


def _sigmoid_grad(z):
    s = jax.nn.sigmoid(z)
    return s * (1 - s)


def _gelu_grad(z):
    # gelu(z) = z Phi(z), with Phi the standard normal CDF and phi its density
    cdf = 0.5 * (1 + jax.lax.erf(z / math.sqrt(2)))
    pdf = jnp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


def _silu_grad(z):
    # silu(z) = z s(z): product rule with s' = s (1 - s)
    s = jax.nn.sigmoid(z)
    return s + z * s * (1 - s)


ACTIVATION_DERIVATIVES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": _sigmoid_grad,
    # the kink at 0 gets derivative 0, as jax.grad of relu does
    "relu": lambda z: (z > 0).astype(z.dtype),
    "tanh": lambda z: 1 - jnp.tanh(z) ** 2,
    "gelu": _gelu_grad,
    "silu": _silu_grad,
    "identity": jnp.ones_like,
}
assert ACTIVATION_DERIVATIVES.keys() == ACTIVATIONS.keys()


class LayerCache(NamedTuple):
    a_BI: jax.Array  # the layer's input
    z_BO: jax.Array  # its pre-activation a W + b


def _num_layers(params: Any) -> int:
    return len(params["params"])


def forward(params: Any, x_BD: jax.Array, activation: str = "relu") -> tuple[jax.Array, list[LayerCache]]:
    """The MLP's forward pass on `MLP.init`'s params; returns logits and each layer's (input, z)."""
    check_activation(activation)
    act = ACTIVATIONS[activation]
    n = _num_layers(params)
    cache = []
    a = x_BD
    for l in range(n):
        layer = params["params"][f"dense{l}"]
        z = a @ layer["kernel"] + layer["bias"]
        cache.append(LayerCache(a, z))
        a = act(z) if l < n - 1 else z  # no activation on the output: it is logits
    return a, cache


# Loss values: the same formulas as optax's (which jaxdl.models may not import), each averaged.
def _mse(pred, y):
    return jnp.mean((pred - y) ** 2)


def _mse_grad(pred, y):
    return 2 * (pred - y) / pred.size


def _bce(logits, y):
    # log sigmoid(z) and log(1 - sigmoid(z)) = log sigmoid(-z), never log of a rounded probability
    return jnp.mean(-y * jax.nn.log_sigmoid(logits) - (1 - y) * jax.nn.log_sigmoid(-logits))


def _bce_grad(logits, y):
    return (jax.nn.sigmoid(logits) - y) / logits.size


def _softmax_ce(logits_BC, labels_B):
    log_p = jax.nn.log_softmax(logits_BC, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels_B[..., None], axis=-1))


def _softmax_ce_grad(logits_BC, labels_B):
    onehot = jax.nn.one_hot(labels_B, logits_BC.shape[-1], dtype=logits_BC.dtype)
    return (jax.nn.softmax(logits_BC, axis=-1) - onehot) / labels_B.size


LOSSES: dict[str, tuple[Callable[[jax.Array, jax.Array], jax.Array], Callable[[jax.Array, jax.Array], jax.Array]]] = {
    "mse": (_mse, _mse_grad),  # y: targets, same shape as logits
    "bce": (_bce, _bce_grad),  # y: 0/1 floats, same shape as logits
    "softmax_ce": (_softmax_ce, _softmax_ce_grad),  # y: integer class labels, shape (B,)
}


def backward(params: Any, cache: list[LayerCache], dlogits: jax.Array, activation: str = "relu") -> Any:
    """dL/dparams from dL/dlogits by the chain rule, in the same pytree structure as `params`."""
    check_activation(activation)
    dact = ACTIVATION_DERIVATIVES[activation]
    grads = {}
    dz = dlogits
    for l in reversed(range(_num_layers(params))):
        layer = params["params"][f"dense{l}"]
        a, _ = cache[l]
        grads[f"dense{l}"] = {"kernel": a.T @ dz, "bias": dz.sum(axis=0)}
        if l > 0:
            da = dz @ layer["kernel"].T
            dz = da * dact(cache[l - 1].z_BO)  # a_l = sigma(z_{l-1})
    return {"params": {f"dense{l}": grads[f"dense{l}"] for l in range(len(grads))}}


def loss_and_grad(
    params: Any, x_BD: jax.Array, y: jax.Array, loss: str, activation: str = "relu"
) -> tuple[jax.Array, jax.Array, Any]:
    """Forward, loss, backward in one call: (loss value, logits, grads shaped like params)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(sorted(LOSSES))}")
    loss_fn, dloss_fn = LOSSES[loss]
    logits, cache = forward(params, x_BD, activation)
    grads = backward(params, cache, dloss_fn(logits, y), activation)
    return loss_fn(logits, y), logits, grads
