"""Character language model, jaxdl against PyTorch in one run: training speed and validation loss.

    python benchmarks/rnn_vs_torch.py [--cell lstm|gru|rnn] [--steps 300] [--rounds 10] [--threads N]
                                      [--batch-size 32] [--seq-len 128] [--embed 64] [--hidden 256]
                                      [--layers 2] [--unroll 1] [--seed 0] [--quick] [--json PATH]

The model: embedding (64) -> 2 recurrent layers (256 hidden) -> vocabulary logits, on the embedded
Shakespeare corpus with the character tokenizer (`load_text("shakespeare")`).
  jaxdl    RecurrentLM (dropout 0) + LanguageModel.loss, the engine's jitted `make_train_step`
  PyTorch  nn.Embedding -> nn.LSTM/GRU/RNN(batch_first=True) -> nn.Linear (benchmarks/torch_lm.py), eager

Same start, same data, same optimizer: the torch model gets jaxdl's initial weights (checked: both
give the same loss on the first batch, else the script stops), both train on the very same
`window_batches(train, batch, seq, seed)` arrays, with Adam(lr 2e-3, betas 0.9/0.999, eps 1e-8)
after clipping the gradients to global norm 1.0 (`make_optimizer("adam", 2e-3, 0, clip_norm=1)`;
torch.optim.Adam after torch.nn.utils.clip_grad_norm_).

Speed: JAX's compile (`.lower(...).compile()`) is timed apart, and the first step of each framework
is run apart (unmeasured). The other --steps - 1 steps of both runs are split into --rounds
rounds; each round runs a block of jaxdl steps then the same number of torch steps (which goes first
alternates from round to round), continuing the same two training runs, so machine noise hits both
alike. Each framework's tokens/s is the median over rounds of (steps x batch x seq) / seconds;
the ratio is jaxdl's over torch's.

Quality: after --steps steps, the validation loss of both by one definition: the mean next-token
cross-entropy in nats over the whole validation split, cut into non-overlapping windows of
--seq-len, each from a zero state (`eval_windows`; jaxdl: LanguageModel.evaluate; torch: the masked
sum of cross-entropy over the same batches / the number of masked targets). bpc = that in bits per
character. The two runs start equal but float32 rounding makes them drift apart, so the losses agree
only statistically: the target is |difference| <= 0.03 nats.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks.torch_lm` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import available_cpus, describe, pin_threads, write_json  # noqa: E402

LR, CLIP_NORM = 2e-3, 1.0
INITIAL_LOSS_TOLERANCE = 1e-4
VAL_LOSS_TARGET = 0.03


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"), help="recurrent cell")
    p.add_argument("--embed", type=int, default=64, help="token embedding width")
    p.add_argument("--hidden", type=int, default=256, help="hidden units per layer")
    p.add_argument("--layers", type=int, default=2, help="stacked recurrent layers")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per training window and per validation window")
    p.add_argument("--batch-size", type=int, default=32, help="windows per training step")
    p.add_argument("--steps", type=int, default=300, help="training steps of each framework (all of them timed but the first)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds the steps are split into")
    p.add_argument("--threads", type=int, default=available_cpus(),
                   help="torch.set_num_threads; below the CPUs available, also pins the process (so XLA) "
                        "to that many cores (default: all available)")
    p.add_argument("--unroll", type=int, default=1, help="jaxdl: time steps per scan iteration")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the training windows")
    p.add_argument("--quick", action="store_true", help="smoke test: 6 steps in 2 rounds (overrides --steps/--rounds)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 6, 2
    for name in ("embed", "hidden", "layers", "seq_len", "batch_size", "rounds", "threads", "unroll"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps < args.rounds + 1:
        p.error(f"--steps must be at least --rounds + 1 = {args.rounds + 1} (one untimed first step, then "
                "at least one step per round)")
    return args


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    pin_threads(args.threads)
    from jaxdl import runtime

    xla_flags = runtime.configure_xla()  # the same process settings as experiments/rnn.py

    import jax
    import numpy as np
    import torch

    from benchmarks.torch_lm import TorchLM, as_tokens, lm_evaluate, lm_loss, lm_params_to_torch
    from jaxdl.data.text import check_seq_len, eval_windows, load_text, window_batches
    from jaxdl.models.recurrent import RecurrentLM
    from jaxdl.tasks.language_model import LanguageModel
    from jaxdl.train import TrainState, make_optimizer, make_train_step
    from jaxdl.train.state import num_params

    torch.set_num_threads(args.threads)
    cpus = available_cpus()
    B, T = args.batch_size, args.seq_len
    tokens_per_step = B * T

    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    data = load_text("shakespeare")
    check_seq_len(data, T)
    V = data.tokenizer.vocab_size
    print(f"{data.name}: {len(data.train):,} train / {len(data.valid):,} validation tokens, vocabulary {V} (char)")

    # the very same training batches for both: numpy arrays, made once, before anything is timed
    stream = window_batches(data.train, B, T, args.seed, args.steps, 0)
    batches_np = [next(stream)["tokens"] for _ in range(args.steps)]
    batches_jax = [{"tokens": jax.device_put(b)} for b in batches_np]
    batches_torch = [as_tokens(b) for b in batches_np]

    # jaxdl: model, task, optimizer, state
    model = RecurrentLM(V, args.cell, args.embed, args.hidden, args.layers, dropout=0.0, unroll=args.unroll)
    task = LanguageModel(model)
    params = task.init(jax.random.key(args.seed), {"tokens": batches_np[0]})
    optimizer = make_optimizer("adam", LR, 0.0, clip_norm=CLIP_NORM)

    # PyTorch: jaxdl's initial weights, the same optimizer
    net = lm_params_to_torch(params, TorchLM(V, args.cell, args.embed, args.hidden, args.layers)).train()
    torch_opt = torch.optim.Adam(net.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    n_params = num_params(params)
    n_torch = sum(p.numel() for p in net.parameters())
    print(f"{args.cell} language model: {args.layers} x {args.hidden} hidden, embed {args.embed}, "
          f"{n_params:,} parameters (torch {n_torch:,}); batch {B} x seq {T} = {tokens_per_step} tokens per step")
    print(f"{cpus} CPUs in use (of {os.cpu_count()}), torch threads {torch.get_num_threads()}, "
          f"jax device {jax.devices()[0].device_kind}")

    # the same start: the same loss on the first batch
    jax_initial = float(jax.jit(task.loss)(params, batches_jax[0], jax.random.key(0))[0])
    with torch.no_grad():
        torch_initial = lm_loss(net, batches_torch[0]).item()
    initial_diff = jax_initial - torch_initial
    print(f"initial loss on the first batch: jaxdl {jax_initial:.6f}, PyTorch {torch_initial:.6f} "
          f"(difference {initial_diff:+.2e}; log(vocab) = {math.log(V):.4f})")
    if n_params != n_torch or not abs(initial_diff) <= INITIAL_LOSS_TOLERANCE:
        sys.exit(f"error: the two models do not start equal (initial losses differ by {initial_diff:.2e} > "
                 f"{INITIAL_LOSS_TOLERANCE:g}, or parameter counts {n_params} vs {n_torch}): check the weight copy")

    state = TrainState.create(params, optimizer, seed=args.seed)
    train_step = make_train_step(task.loss, optimizer)
    t = time.perf_counter()
    compiled = train_step.lower(state, batches_jax[0]).compile()
    compile_s = time.perf_counter() - t

    def torch_step(tokens_BT1):
        torch_opt.zero_grad(set_to_none=True)
        loss = lm_loss(net, tokens_BT1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP_NORM)
        torch_opt.step()
        return loss

    jax_losses, torch_losses = [], []  # per step, for the training curves (read after timing)
    step = {"jaxdl": 0, "PyTorch": 0}

    def run_jax(n):
        nonlocal state
        metrics = None
        for _ in range(n):
            state, metrics = compiled(state, batches_jax[step["jaxdl"]])  # the state is donated: keep the new one
            jax_losses.append(metrics["loss"])
            step["jaxdl"] += 1
        jax.block_until_ready((state, metrics))

    def run_torch(n):
        for _ in range(n):
            torch_losses.append(torch_step(batches_torch[step["PyTorch"]]).detach())
            step["PyTorch"] += 1

    runners = {"jaxdl": run_jax, "PyTorch": run_torch}
    first_step_s = {}
    for name, run in runners.items():  # the first step of each, apart from the timed rounds
        t = time.perf_counter()
        run(1)
        first_step_s[name] = time.perf_counter() - t

    blocks = [len(b) for b in np.array_split(np.arange(args.steps - 1), args.rounds)]
    per_round = {name: [] for name in runners}
    print(f"\ntraining {args.steps} steps each: {args.rounds} interleaved rounds of {min(blocks)}-{max(blocks)} "
          "steps per framework after the first step")
    for r, k in enumerate(blocks):
        order = ["jaxdl", "PyTorch"] if r % 2 == 0 else ["PyTorch", "jaxdl"]
        for name in order:
            t = time.perf_counter()
            runners[name](k)
            per_round[name].append(k * tokens_per_step / (time.perf_counter() - t))
        print(f"  round {r + 1}/{args.rounds}: steps {step['jaxdl']}, "
              + ", ".join(f"{n} {per_round[n][-1]:,.0f} tok/s" for n in runners)
              + f"; train loss jaxdl {float(jax_losses[-1]):.4f}, PyTorch {float(torch_losses[-1]):.4f}", flush=True)
    assert step["jaxdl"] == step["PyTorch"] == args.steps

    # quality: the same validation loss definition on the same windows
    t = time.perf_counter()
    jax_val = task.evaluate(state.params, eval_windows(data.valid, T, B), data.tokens_per_char)
    jax_eval_s = time.perf_counter() - t
    t = time.perf_counter()
    torch_val = lm_evaluate(net, eval_windows(data.valid, T, B), data.tokens_per_char)
    torch_eval_s = time.perf_counter() - t
    val_diff = jax_val["loss"] - torch_val["loss"]

    rows = {}
    for name, val, compile_col in (("jaxdl", jax_val, compile_s), ("PyTorch", torch_val, None)):
        tps = statistics.median(per_round[name])
        rows[name] = {"tokens_per_s": tps, "ms_per_step": 1e3 * tokens_per_step / tps, "compile_s": compile_col,
                      "first_step_s": first_step_s[name], "val_loss": val["loss"], "val_bpc": val["bpc"],
                      "val_accuracy": val["accuracy"], "tokens_per_s_rounds": per_round[name]}
    rows["jaxdl"]["eval_s"], rows["PyTorch"]["eval_s"] = jax_eval_s, torch_eval_s
    ratio = rows["jaxdl"]["tokens_per_s"] / rows["PyTorch"]["tokens_per_s"]
    curves = {"jaxdl": [float(x) for x in jax.device_get(jax_losses)], "PyTorch": [float(x) for x in torch_losses]}
    tail = max(1, args.steps // 10)
    train_tail = {n: float(np.mean(c[-tail:])) for n, c in curves.items()}

    print(f"\n{args.cell.upper()} char LM, {args.layers} x {args.hidden} hidden, embed {args.embed}, batch {B}, "
          f"seq {T}, {args.steps} steps, Adam {LR:g} + clip {CLIP_NORM:g}; medians over {args.rounds} interleaved rounds\n")
    print("| framework | tokens/s | ms/step | compile s | val loss (nats) | val bpc |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        comp = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "- (eager)"
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['ms_per_step']:.1f} | {comp} | {r['val_loss']:.4f} "
              f"| {r['val_bpc']:.4f} |")
    verdict = "within" if abs(val_diff) <= VAL_LOSS_TARGET else "OUTSIDE"
    print(f"\njaxdl / PyTorch tokens/s: {ratio:.2f}x")
    max_train_diff = max(abs(a - b) for a, b in zip(curves["jaxdl"], curves["PyTorch"]))
    print(f"val loss difference (jaxdl - PyTorch): {val_diff:+.2e} nats ({verdict} the {VAL_LOSS_TARGET} target); "
          f"largest per-step train loss difference: {max_train_diff:.2e}")
    print(f"mean train loss over the last {tail} steps: jaxdl {train_tail['jaxdl']:.4f}, PyTorch {train_tail['PyTorch']:.4f}")
    print("rounds (tokens/s): " + "; ".join(f"{n} {min(r['tokens_per_s_rounds']):,.0f} - {max(r['tokens_per_s_rounds']):,.0f}"
                                             for n, r in rows.items()))
    print(f"first step (apart from the rounds): jaxdl {first_step_s['jaxdl']:.2f} s, PyTorch {first_step_s['PyTorch']:.2f} s; "
          f"validation pass ({len(data.valid) - 1:,} targets): jaxdl {jax_eval_s:.1f} s (with its compile), "
          f"PyTorch {torch_eval_s:.1f} s")
    machine = describe(xla_flags)
    load_at_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"1-minute load average: {load_at_start:.2f} at the start (other work), {load_at_end:.2f} at the end "
          f"(this run included); on a shared machine, the throughputs depend on it")

    figures = {"config": vars(args), "rows": rows, "jax_over_torch": ratio, "val_loss_diff": val_diff, "max_train_loss_diff": max_train_diff,
               "initial_loss": {"jaxdl": jax_initial, "PyTorch": torch_initial}, "train_loss_curves": curves,
               "num_params": n_params, **machine,
               "load_average_1min": {"start": load_at_start, "end": load_at_end}, "device": jax.devices()[0].device_kind}
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
