"""What the "jaxdl against PyTorch" language-model benchmarks share (lm_vs_torch.py, rnn_vs_torch.py).

A script builds its own two models (a jaxdl `LanguageModel` task and the torch module that mirrors
it, with jaxdl's initial weights copied in); `LMComparison` does the rest, the same for both:

  setup             pins the threads, configures XLA, loads the Shakespeare corpus (character
                    tokenizer), makes the very same training batches for both, before anything is timed
  check_same_start  the same loss on the first batch and as many parameters, else the script stops
  train             Adam(lr, betas 0.9/0.999, eps 1e-8, no weight decay) after clipping the gradients
                    to a global norm (`make_optimizer("adam", lr, 0, clip_norm=...)`; torch.optim.Adam
                    after torch.nn.utils.clip_grad_norm_). JAX's compile is timed apart and the first
                    step of each framework is run apart; the other steps are split into --rounds
                    interleaved rounds (which framework goes first alternates), continuing the same two
                    training runs, so machine noise hits both alike; tokens/s = the median over rounds;
                    also each framework's minor page faults per timed step (getrusage), the cost of
                    memory the C allocator returned to the kernel and takes back (jaxdl.runtime)
  validate          the same validation loss definition on the same `eval_windows` for both
  report            the summary rows, the markdown table, the verdict lines and the JSON figures

Also the command-line flags the scripts share (`add_run_args`, `add_common_tail`, `finish_args`)
and the GPT's shape flags (`add_gpt_args`, `check_heads`, used by generation_speed.py as well).
torch and jax are imported lazily, after the threads are pinned.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from benchmarks.machine import (available_cpus, check_positive, describe, load_average, parse_quick, pin_threads,
                                require_torch, write_json)

INITIAL_LOSS_TOLERANCE = 1e-4
VAL_LOSS_TARGET = 0.03
FRAMEWORKS = ("jaxdl", "PyTorch")


def add_gpt_args(p) -> None:
    """--layers, --heads, --d-model: the shape of a DecoderLM (GPT)."""
    p.add_argument("--layers", type=int, default=4, help="transformer blocks")
    p.add_argument("--heads", type=int, default=4, help="attention heads per block")
    p.add_argument("--d-model", type=int, default=128, help="model width")


def check_heads(p, args) -> None:
    if args.d_model % args.heads:
        p.error(f"--heads {args.heads} must divide --d-model {args.d_model}")


def add_run_args(p, batch_size: int, steps: int) -> None:
    """--batch-size, --steps, --rounds, --threads of a training comparison."""
    p.add_argument("--batch-size", type=int, default=batch_size, help="windows per training step")
    p.add_argument("--steps", type=int, default=steps, help="training steps of each framework (all of them timed but the first)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds the steps are split into")
    p.add_argument("--threads", type=int, default=available_cpus(),
                   help="torch.set_num_threads; below the CPUs available, also pins the process (so XLA) "
                        "to that many cores (default: all available)")


def add_recurrent_args(p) -> None:
    """--cell, --embed, --hidden, --layers, --seq-len, --unroll: a recurrent stack's shape and loop
    (experiments/rnn.py's defaults)."""
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"), help="recurrent cell")
    p.add_argument("--embed", type=int, default=64, help="token embedding width (the stack's input width)")
    p.add_argument("--hidden", type=int, default=256, help="hidden units per layer")
    p.add_argument("--layers", type=int, default=2, help="stacked recurrent layers")
    p.add_argument("--seq-len", type=int, default=128, help="time steps: tokens per training and validation window")
    p.add_argument("--unroll", type=int, default=1, help="jaxdl: time steps per iteration of the layers' time loop")


def add_common_tail(p) -> None:
    """--seed, --quick, --json."""
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the training windows")
    p.add_argument("--quick", action="store_true",
                   help="smoke test of the whole script: a tiny model, 6 steps in 2 rounds (flags given still win)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")


QUICK_RUN = {"steps": 6, "rounds": 2}


def finish_args(p, argv, positive, check=None, quick=None):
    """Parse (--quick: `quick` and QUICK_RUN as the defaults); every flag in `positive` at least 1;
    `check(p, args)`; enough steps for the rounds."""
    args = parse_quick(p, argv, {**QUICK_RUN, **(quick or {})})
    check_positive(p, args, positive)
    if check is not None:
        check(p, args)
    if args.steps < args.rounds + 1:
        p.error(f"--steps must be at least --rounds + 1 = {args.rounds + 1} (one untimed first step, then "
                "at least one step per round)")
    return args


def minor_faults() -> int:
    """This process's minor page faults so far (pages the kernel had to map in again)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class LMComparison:
    """One run of the comparison: the constructor (setup), `set_models`, `check_same_start`, `train`,
    `validate`, `summarize`, `print_table`, `print_summary`, `finish`, in that order (see the module docstring)."""

    def __init__(self, args, seq_len: int, script: str):
        """`script`: the comparison's own file (its process may start again in place, jaxdl/allocator.py)."""
        from jaxdl import runtime

        self.xla_flags = runtime.configure(script)  # the same process settings as the experiment scripts
        require_torch()
        self.args, self.B, self.T = args, args.batch_size, seq_len
        self.tokens_per_step = self.B * self.T
        pin_threads(args.threads)
        import jax
        import torch

        from benchmarks.torch_lm import as_tokens
        from jaxdl.data.text import check_seq_len, load_text, window_batches

        torch.set_num_threads(args.threads)
        self.load_at_start = load_average()
        self.data = data = load_text("shakespeare")
        check_seq_len(data, self.T)
        self.vocab_size = V = data.tokenizer.vocab_size
        print(f"{data.name}: {len(data.train):,} train / {len(data.valid):,} validation tokens, vocabulary {V} (char)")
        # the very same training batches for both: numpy arrays, made once, before anything is timed
        stream = window_batches(data.train, self.B, self.T, args.seed)
        self.batches_np = [stream[s]["tokens"] for s in range(args.steps)]
        self.batches_jax = [{"tokens": jax.device_put(b)} for b in self.batches_np]
        self.batches_torch = [as_tokens(b) for b in self.batches_np]

    def set_models(self, task, params, net) -> tuple[int, int]:
        """Take the jaxdl task with its initial params and the torch module; return both parameter counts."""
        from jaxdl.train.state import num_params

        self.task, self.params, self.net = task, params, net
        self.n_params, self.n_torch = num_params(params), sum(p.numel() for p in net.parameters())
        return self.n_params, self.n_torch

    def check_same_start(self) -> None:
        """Print the CPUs; stop unless both models have as many parameters and the same loss on the first batch."""
        import math

        import jax
        import torch

        from benchmarks.torch_lm import lm_loss

        task, params, net, n_params, n_torch = self.task, self.params, self.net, self.n_params, self.n_torch
        print(f"{available_cpus()} CPUs in use (of {os.cpu_count()}), torch threads {torch.get_num_threads()}, "
              f"jax device {jax.devices()[0].device_kind}")
        jax_initial = float(jax.jit(task.loss)(params, self.batches_jax[0], jax.random.key(0))[0])
        with torch.no_grad():
            torch_initial = lm_loss(net, self.batches_torch[0]).item()
        self.initial = {"jaxdl": jax_initial, "PyTorch": torch_initial}
        diff = jax_initial - torch_initial
        print(f"initial loss on the first batch: jaxdl {jax_initial:.6f}, PyTorch {torch_initial:.6f} "
              f"(difference {diff:+.2e}; log(vocab) = {math.log(self.vocab_size):.4f})")
        if n_params != n_torch or not abs(diff) <= INITIAL_LOSS_TOLERANCE:
            sys.exit(f"error: the two models do not start equal (initial losses differ by {diff:.2e} > "
                     f"{INITIAL_LOSS_TOLERANCE:g}, or parameter counts {n_params} vs {n_torch}): check the weight copy")

    def train(self, lr: float, clip_norm: float) -> None:
        """Compile, one first step each, then the interleaved timed rounds (see the module docstring)."""
        import jax
        import numpy as np
        import torch

        from benchmarks.torch_lm import lm_loss
        from jaxdl.train import TrainState, make_optimizer, make_train_step

        args, net = self.args, self.net
        optimizer = make_optimizer("adam", lr, 0.0, clip_norm=clip_norm)
        torch_opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        state = TrainState.create(self.params, optimizer, seed=args.seed)
        train_step = make_train_step(self.task.loss, optimizer)
        t = time.perf_counter()
        compiled = train_step.lower(state, self.batches_jax[0]).compile()
        self.compile_s = time.perf_counter() - t

        def torch_step(tokens_BT1):
            torch_opt.zero_grad(set_to_none=True)
            loss = lm_loss(net, tokens_BT1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
            torch_opt.step()
            return loss

        losses = self.losses = {"jaxdl": [], "PyTorch": []}  # per step, for the training curves (read after timing)
        step = {"jaxdl": 0, "PyTorch": 0}

        def run_jax(n):
            nonlocal state
            metrics = None
            for _ in range(n):
                state, metrics = compiled(state, self.batches_jax[step["jaxdl"]])  # the state is donated: keep the new one
                losses["jaxdl"].append(metrics["loss"])
                step["jaxdl"] += 1
            jax.block_until_ready((state, metrics))

        def run_torch(n):
            for _ in range(n):
                losses["PyTorch"].append(torch_step(self.batches_torch[step["PyTorch"]]).detach())
                step["PyTorch"] += 1

        runners = {"jaxdl": run_jax, "PyTorch": run_torch}
        self.first_step_s = {}
        for name, run in runners.items():  # the first step of each, apart from the timed rounds
            t = time.perf_counter()
            run(1)
            self.first_step_s[name] = time.perf_counter() - t

        blocks = [len(b) for b in np.array_split(np.arange(args.steps - 1), args.rounds)]
        per_round = self.per_round = {name: [] for name in runners}
        faults = self.faults = {name: 0 for name in runners}
        print(f"\ntraining {args.steps} steps each: {args.rounds} interleaved rounds of {min(blocks)}-{max(blocks)} "
              "steps per framework after the first step")
        for r, k in enumerate(blocks):
            for name in (FRAMEWORKS if r % 2 == 0 else FRAMEWORKS[::-1]):
                f, t = minor_faults(), time.perf_counter()
                runners[name](k)
                per_round[name].append(k * self.tokens_per_step / (time.perf_counter() - t))
                faults[name] += minor_faults() - f
            print(f"  round {r + 1}/{args.rounds}: steps {step['jaxdl']}, "
                  + ", ".join(f"{n} {per_round[n][-1]:,.0f} tok/s" for n in runners)
                  + f"; train loss jaxdl {float(losses['jaxdl'][-1]):.4f}, "
                  f"PyTorch {float(losses['PyTorch'][-1]):.4f}", flush=True)
        assert step["jaxdl"] == step["PyTorch"] == args.steps
        self.state = state

    def validate(self) -> None:
        """Both validation passes, timed: LanguageModel.evaluate and `lm_evaluate` on the same windows."""
        from benchmarks.torch_lm import lm_evaluate
        from jaxdl.data.text import eval_windows

        data = self.data
        t = time.perf_counter()
        jax_val = self.task.evaluate(self.state.params, eval_windows(data.valid, self.T, self.B), data.tokens_per_char)
        jax_eval_s = time.perf_counter() - t
        t = time.perf_counter()
        torch_val = lm_evaluate(self.net, eval_windows(data.valid, self.T, self.B), data.tokens_per_char)
        self.val = {"jaxdl": jax_val, "PyTorch": torch_val}
        self.eval_s = {"jaxdl": jax_eval_s, "PyTorch": time.perf_counter() - t}
        self.val_diff = jax_val["loss"] - torch_val["loss"]

    def summarize(self, extra=lambda tokens_per_s: {}) -> dict:
        """The rows of the table (`extra(tokens/s)`: more figures after first_step_s), the ratio, the curves."""
        import jax
        import numpy as np

        rows = self.rows = {}
        for name in FRAMEWORKS:
            tps, val = statistics.median(self.per_round[name]), self.val[name]
            rows[name] = {"tokens_per_s": tps, "ms_per_step": 1e3 * self.tokens_per_step / tps,
                          "compile_s": self.compile_s if name == "jaxdl" else None,
                          "first_step_s": self.first_step_s[name], **extra(tps),
                          "page_faults_per_step": self.faults[name] / (self.args.steps - 1), "val_loss": val["loss"],
                          "val_bpc": val["bpc"], "val_accuracy": val["accuracy"],
                          "tokens_per_s_rounds": self.per_round[name], "eval_s": self.eval_s[name]}
        self.ratio = rows["jaxdl"]["tokens_per_s"] / rows["PyTorch"]["tokens_per_s"]
        self.curves = {"jaxdl": [float(x) for x in jax.device_get(self.losses["jaxdl"])],
                       "PyTorch": [float(x) for x in self.losses["PyTorch"]]}
        self.tail = max(1, self.args.steps // 10)
        self.train_tail = {n: float(np.mean(c[-self.tail:])) for n, c in self.curves.items()}
        return rows

    def print_table(self, extra_columns=()) -> None:
        """The markdown table; `extra_columns`: (header, row -> cell) pairs after the compile column."""
        headers = ["tokens/s", "ms/step", "compile s", *(h for h, _ in extra_columns), "page faults/step",
                   "val loss (nats)", "val bpc"]
        print("| framework | " + " | ".join(headers) + " |")
        print("|---|" + "---:|" * len(headers))
        for name, r in self.rows.items():
            comp = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "- (eager)"
            cells = [name, f"{r['tokens_per_s']:,.0f}", f"{r['ms_per_step']:.1f}", comp,
                     *(cell(r) for _, cell in extra_columns), f"{r['page_faults_per_step']:,.0f}",
                     f"{r['val_loss']:.4f}", f"{r['val_bpc']:.4f}"]
            print("| " + " | ".join(cells) + " |")

    def print_summary(self) -> None:
        """The ratio, the validation verdict, the training losses, the round spread, the first steps."""
        rows, val_diff, tail = self.rows, self.val_diff, self.tail
        verdict = "within" if abs(val_diff) <= VAL_LOSS_TARGET else "OUTSIDE"
        print(f"\njaxdl / PyTorch tokens/s: {self.ratio:.2f}x")
        self.max_train_diff = max(abs(a - b) for a, b in zip(self.curves["jaxdl"], self.curves["PyTorch"]))
        print(f"val loss difference (jaxdl - PyTorch): {val_diff:+.2e} nats ({verdict} the {VAL_LOSS_TARGET} target); "
              f"largest per-step train loss difference: {self.max_train_diff:.2e}")
        print(f"mean train loss over the last {tail} steps: jaxdl {self.train_tail['jaxdl']:.4f}, "
              f"PyTorch {self.train_tail['PyTorch']:.4f}")
        print("rounds (tokens/s): " + "; ".join(f"{n} {min(r['tokens_per_s_rounds']):,.0f} - "
                                                 f"{max(r['tokens_per_s_rounds']):,.0f}" for n, r in rows.items()))
        first, ev = self.first_step_s, self.eval_s
        print(f"first step (apart from the rounds): jaxdl {first['jaxdl']:.2f} s, PyTorch {first['PyTorch']:.2f} s; "
              f"validation pass ({len(self.data.valid) - 1:,} targets): jaxdl {ev['jaxdl']:.1f} s (with its compile), "
              f"PyTorch {ev['PyTorch']:.1f} s")

    def finish(self, extra_figures=None) -> dict:
        """Print the machine and the load; write and return the JSON figures (`extra_figures` after num_params)."""
        import jax

        machine = describe(self.xla_flags)
        load_at_end = load_average()
        print(f"1-minute load average: {self.load_at_start:.2f} at the start (other work), {load_at_end:.2f} at the end "
              f"(this run included); on a shared machine, the throughputs depend on it")
        figures = {"config": vars(self.args), "rows": self.rows, "jax_over_torch": self.ratio,
                   "val_loss_diff": self.val_diff, "max_train_loss_diff": self.max_train_diff,
                   "initial_loss": self.initial, "train_loss_curves": self.curves, "num_params": self.n_params,
                   **(extra_figures or {}), **machine,
                   "load_average_1min": {"start": self.load_at_start, "end": load_at_end},
                   "device": jax.devices()[0].device_kind}
        write_json(self.args.json, figures)
        return figures
