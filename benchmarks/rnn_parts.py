"""Where a recurrent stack's time goes on this machine: jaxdl's layers against PyTorch's, and the parts
XLA runs them from, each timed alone.

    python benchmarks/rnn_parts.py [--cell lstm|gru|rnn] [--embed 64] [--hidden 256] [--layers 2]
                                   [--seq-len 128] [--unroll 1] [--batch-size 32] [--rounds 7] [--quick]
                                   [--json PATH]

The shapes are those of `benchmarks/rnn_vs_torch.py` (and `python experiments/rnn.py`): inputs of
batch x seq-len x embed, float32. Rows, each one jitted function (PyTorch: eager):

  stack, forward + backward   jaxdl's `Recurrent` (the gradient of sum(y^2) with respect to the
                              weights and inputs; --unroll time steps per iteration of its time
                              loops) against torch.nn.LSTM/GRU/RNN (batch_first, .backward()); on
                              x86 PyTorch's LSTM is oneDNN's fused LSTM kernel
  stack, forward              the same without the gradient (torch.no_grad)
  loop: recurrent matmuls     one layer's seq-len dependent `h @ W_hh` (batch x hidden x gates *
                              hidden) in a `fori_loop`, each followed only by a tanh of its first
                              hidden columns (the next h): the floor of XLA's sequential matmuls
  loop: + the cell            the same loop with the cell's own elementwise step
                              (`jaxdl.models.recurrence.cell_step`) in place of that tanh
  loop: + the input's slice   the same, adding each step's slice of the input projection (which
                              the layer's own loop adds too; there XLA adds it inside the matmul)

Timing: every row runs once apart (compile), then --rounds rounds each run every row once in turn,
so machine noise hits all alike; each row's figure is its median over rounds. The loop rows print
microseconds per time step and the recurrent matmuls' GFLOP/s. A stack's forward and backward run
2 x layers x seq-len such steps (and its large input-projection and weight-gradient matmuls), so
the loop rows say how much of the stack's time the sequential steps alone must take on XLA:CPU.

--quick checks the script end to end in well under a minute: embed 8, 1 layer of 16, seq 8, batch 4,
2 rounds (any of these given as flags still wins); its figures measure nothing.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks.machine` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.lm_harness import add_recurrent_args  # noqa: E402
from benchmarks.machine import check_positive, describe, make_parser, parse_quick, require_torch, write_json  # noqa: E402
from jaxdl import cli  # noqa: E402

QUICK = {"embed": 8, "hidden": 16, "layers": 1, "seq_len": 8, "batch_size": 4, "rounds": 2}


def parse_args(argv):
    p = make_parser(__doc__)
    add_recurrent_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (medians over them)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the script end to end")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parse_quick(p, argv, QUICK)
    check_positive(p, args, ("embed", "hidden", "layers", "seq_len", "unroll", "batch_size", "rounds"))
    return args


def jax_rows(args) -> dict:
    """{row: (function, its arguments)} for jaxdl's stack and XLA's loops."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdl.models.recurrence import GATES, cell_step, hidden_of
    from jaxdl.models.recurrent import Recurrent

    B, T, E, H = args.batch_size, args.seq_len, args.embed, args.hidden
    G = GATES[args.cell] * H
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((B, T, E), dtype=np.float32))
    model = Recurrent(args.cell, H, args.layers, unroll=args.unroll)
    params = model.init(jax.random.key(0), x)
    w_hh = jnp.asarray(rng.uniform(-H ** -0.5, H ** -0.5, (H, G)).astype(np.float32))
    xg = jnp.asarray(rng.standard_normal((T, B, G), dtype=np.float32))
    carry = Recurrent(args.cell, H).initial_carry(B)
    carry = jax.tree.map(lambda a: a[0], carry)

    def stack_grad(params, x):
        return jax.grad(lambda p, x: (model.apply(p, x)[0] ** 2).sum(), argnums=(0, 1))(params, x)

    def loop(kind):
        def run(w_hh, xg, carry):
            def body(t, carry):
                hg = hidden_of(carry) @ w_hh
                if kind == "matmuls":
                    h = jnp.tanh(hg[:, :H])
                    return (h, *carry[1:]) if isinstance(carry, tuple) else h
                x_t = xg[t] if kind == "input" else jnp.zeros_like(hg)
                return cell_step(args.cell, x_t, hg, carry)[0]
            return jax.lax.fori_loop(0, T, body, carry)
        return run

    return {"stack, forward + backward": (stack_grad, (params, x)),
            "stack, forward": (lambda p, x: model.apply(p, x)[0], (params, x)),
            "loop: recurrent matmuls": (loop("matmuls"), (w_hh, xg, carry)),
            "loop: + the cell": (loop("cell"), (w_hh, xg, carry)),
            "loop: + the input's slice": (loop("input"), (w_hh, xg, carry))}


def torch_rows(args) -> dict:
    import numpy as np
    import torch

    torch.manual_seed(0)
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[args.cell]
    net = layer(args.embed, args.hidden, args.layers, batch_first=True)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((args.batch_size, args.seq_len, args.embed), dtype=np.float32))
    x.requires_grad_(True)

    def forward_backward():
        net.zero_grad(set_to_none=True)
        x.grad = None
        (net(x)[0] ** 2).sum().backward()

    def forward():
        with torch.no_grad():
            net(x)

    return {"stack, forward + backward": forward_backward, "stack, forward": forward}


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    require_torch()
    from jaxdl import runtime

    xla_flags = runtime.configure(__file__)
    import jax

    compiled = {}
    for name, (fn, fn_args) in jax_rows(args).items():
        f = jax.jit(fn)
        jax.block_until_ready(f(*fn_args))
        compiled[name] = (f, fn_args)
    torch_fns = torch_rows(args)
    for fn in torch_fns.values():
        fn()

    seconds = {("jaxdl", name): [] for name in compiled} | {("PyTorch", name): [] for name in torch_fns}
    for _ in range(args.rounds):
        for name, (f, fn_args) in compiled.items():
            t = time.perf_counter()
            jax.block_until_ready(f(*fn_args))
            seconds["jaxdl", name].append(time.perf_counter() - t)
        for name, fn in torch_fns.items():
            t = time.perf_counter()
            fn()
            seconds["PyTorch", name].append(time.perf_counter() - t)
    median = {key: statistics.median(v) for key, v in seconds.items()}

    B, T, H = args.batch_size, args.seq_len, args.hidden
    from jaxdl.models.recurrence import GATES
    step_flops = 2 * B * H * GATES[args.cell] * H
    print(f"{args.cell.upper()} stack: {args.layers} x {H} hidden, inputs {B} x {T} x {args.embed}, "
          f"{args.unroll} time step(s) per loop iteration; medians over {args.rounds} interleaved rounds")
    print()
    print("| part | framework | ms | us per time step | recurrent matmul GFLOP/s |")
    print("|---|---|---:|---:|---:|")
    figures = {}
    for (framework, name), s in median.items():
        per_step = rate = ""
        if name.startswith("loop"):
            per_step, rate = f"{s / T * 1e6:.1f}", f"{step_flops * T / s / 1e9:.1f}"
        print(f"| {name} | {framework} | {s * 1e3:.2f} | {per_step} | {rate} |")
        figures[f"{framework}: {name}"] = s
    print()
    for part in ("stack, forward + backward", "stack, forward"):
        print(f"jaxdl / PyTorch speed, {part}: {median['PyTorch', part] / median['jaxdl', part]:.2f}x")
    steps = 2 * args.layers * T  # forward and backward loops of every layer
    print(f"the stack's {steps} sequential steps at the '+ the cell' loop's rate: "
          f"{median['jaxdl', 'loop: + the cell'] / T * steps * 1e3:.2f} ms")
    figures["machine"] = describe(xla_flags)
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    cli.run(main)
