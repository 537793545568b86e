"""Model FLOPs of a step, counted from its jaxpr: the numerator of model FLOPs utilisation (MFU).

Only matrix multiplies count, as in PaLM's MFU (Chowdhery et al. 2022, appendix B): `dot_general`
and `conv_general_dilated`, 2 FLOPs per multiply-add. Elementwise ops, reductions and gathers
(embedding lookups) are free by this convention. The count walks `jax.make_jaxpr(fn)(*args)`,
so nothing is compiled or run, and it sees what the step really does: a gradient's matmuls
(weight gradients always, input gradients only where something upstream needs them), matmuls
written by hand in a custom VJP, every model of a vmapped step. Two things PaLM would not count
are counted: the forward that a rematerialised (`jax.checkpoint`) block recomputes in its backward,
and a matmul whose result nothing uses (the jaxpr is not pruned; a train step returns its loss, so
its forward is all used).

Sub-jaxprs count as they run: a `scan` body `length` times, the costliest branch of a `cond`
(only one runs), calls (jit, custom_jvp/custom_vjp primals, remat) once. A `while` loop has no
trip count in its jaxpr: one whose body (or condition) multiplies matrices raises
`UncountableLoop` rather than return a number that could be off by any factor (`fori_loop` with
static bounds is a `scan` and counts exactly). Inside `shard_map` the shapes, and so the counts,
are one shard's. cuDNN's fused attention (`jax.nn.dot_product_attention(implementation="cudnn")`,
GPU only) is one primitive, not dot_generals: it counts from its operands' shapes.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable

import jax
from jax.extend.core import Jaxpr, JaxprEqn, jaxprs_in_params


# cuDNN fused attention, forward and backward: FLOPs per (query element x key position). Forward:
# QK^T and PV, 2 each; backward: dQ, dK, dV and dP, twice the forward (recomputing the scores is not
# model FLOPs). Masked (causal) blocks count, as in PaLM's 12 L T D and as XLA's attention computes.
FUSED_ATTENTION = {"dot_product_attention_fwd_wrapper": 4, "dot_product_attention_bwd_wrapper": 8}
BNTH = 1  # jax's cuDNN layout code for (batch, heads, time, head width); 0 is (batch, time, heads, width)


class UncountableLoop(ValueError):
    """A `while` loop multiplies matrices an unknown number of times."""


def matmul_flops(fn: Callable, *args: Any, **kwargs: Any) -> float:
    """Matrix-multiply FLOPs of one call `fn(*args, **kwargs)`, traced, never run."""
    return float(sum(matmul_flops_by_dtype(fn, *args, **kwargs).values()))


def matmul_flops_by_dtype(fn: Callable, *args: Any, **kwargs: Any) -> dict[str, float]:
    """The same FLOPs split by the dtype of the matmuls' left operand ({"float32": ...}): a
    bfloat16 matmul runs against another peak than a float32 one. Args may be arrays or
    `jax.ShapeDtypeStruct`s."""
    return dict(_count(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr))


def _count(jaxpr: Jaxpr) -> Counter:
    """FLOPs by dtype of every matmul in `jaxpr`, sub-jaxprs weighted by how often they run."""
    total: Counter = Counter()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("dot_general", "conv_general_dilated"):
            flops = _dot_flops(eqn) if name == "dot_general" else _conv_flops(eqn)
            total[eqn.invars[0].aval.dtype.name] += flops
        elif name in FUSED_ATTENTION:
            total[eqn.invars[0].aval.dtype.name] += _fused_attention_flops(eqn, FUSED_ATTENTION[name])
        elif name == "cond":  # one branch runs: the costliest bounds it (the others are usually identities)
            total += max((_count(b.jaxpr) for b in eqn.params["branches"]), key=lambda c: sum(c.values()))
        elif name == "while":
            if any(sum(_count(j).values()) for j in jaxprs_in_params(eqn.params)):
                raise UncountableLoop("a while loop multiplies matrices an unknown number of times")
        else:  # calls, remat, custom_jvp/vjp primals, scan: whatever sub-jaxprs the params hold
            times = eqn.params["length"] if name == "scan" else 1
            for sub in jaxprs_in_params(eqn.params):
                total += Counter({k: v * times for k, v in _count(sub).items()})
    return total


def _dot_flops(eqn: JaxprEqn) -> int:
    """2 x every output element x the contracted size: batch x lhs-free x rhs-free x contracting."""
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[d] for d in lhs_contracting)


def _conv_flops(eqn: JaxprEqn) -> float:
    """2 x every output element x the kernel's size per output feature (input features per group x
    kernel window). This holds for feature groups (the kernel's input-feature axis is already
    C / groups) and for batch groups (how jax writes grouped convolutions' weight gradients) alike,
    and for a weight gradient written as a convolution, whose "kernel" is the output gradient. The
    zeros an input-dilated (transposed) convolution inserts are not counted: the input gradient of
    a stride-s convolution costs what its forward does, as cuDNN and the like compute it."""
    rhs_shape = eqn.invars[1].aval.shape
    out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    per_output = math.prod(rhs_shape) // rhs_shape[out_feature_dim]
    return 2 * math.prod(eqn.outvars[0].aval.shape) * per_output / math.prod(eqn.params["lhs_dilation"])


def _fused_attention_flops(eqn: JaxprEqn, per_pair: int) -> int:
    """`per_pair` x query elements (batch x heads x positions x width) x key positions."""
    query_shape, key_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    key_positions = key_shape[2] if eqn.params["layout"] == BNTH else key_shape[1]
    return per_pair * math.prod(query_shape) * key_positions


def speed_note(per_sec: float | None, unit: str, mfu: float | None) -> str:
    """' (training: 1,234 examples/s, MFU 23.4%)' for the end of a run's last line; '' when this
    invocation trained nothing (a finished run rerun)."""
    if per_sec is None:
        return ""
    share = "" if mfu is None else f", MFU {mfu:.1%}" if mfu >= 1e-3 else f", MFU {100 * mfu:.2g}%"  # tiny models
    return f" (training: {per_sec:,.0f} {unit}/s{share})"
