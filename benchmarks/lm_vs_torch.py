"""GPT character language model, jaxdl against PyTorch in one run: training speed, MFU and validation loss.

    python benchmarks/lm_vs_torch.py [--layers 4] [--heads 4] [--d-model 128] [--context 64]
                                     [--batch-size 12] [--steps 500] [--rounds 10] [--threads N]
                                     [--no-scan] [--seed 0] [--quick] [--json PATH]

The model: a decoder-only transformer, 4 pre-norm layers of 4 heads, width 128, context 64, learned
positions, LayerNorm, an untied head, dropout 0, on the embedded Shakespeare corpus with the
character tokenizer (`load_text("shakespeare")`), batches of 12 windows.
  jaxdl    DecoderLM (scanned layers, the model's default; --no-scan: a Python loop over the layers)
           + LanguageModel.loss, the engine's jitted `make_train_step`
  PyTorch  TorchGPT (benchmarks/torch_gpt.py): the same arithmetic, F.scaled_dot_product_attention(is_causal=True), eager

Same start, same data, same optimizer: the torch model gets jaxdl's initial weights (checked: both
give the same loss on the first batch, else the script stops), both train on the very same
`window_batches(train, batch, context, seed)` arrays, with Adam(lr 1e-3, betas 0.9/0.999, eps 1e-8,
no weight decay) after clipping the gradients to global norm 1.0 (`make_optimizer("adam", 1e-3, 0,
clip_norm=1)`; torch.optim.Adam after torch.nn.utils.clip_grad_norm_), the settings of
benchmarks/rnn_vs_torch.py.

Speed: JAX's compile (`.lower(...).compile()`) is timed apart, and the first step of each framework
is run apart (unmeasured). The other --steps - 1 steps of both runs are split into --rounds rounds;
each round runs a block of jaxdl steps then the same number of torch steps (which goes first
alternates from round to round), continuing the same two training runs, so machine noise hits both
alike. Each framework's tokens/s is the median over rounds of (steps x batch x context) / seconds;
the ratio is jaxdl's over torch's.

MFU (model FLOPs utilisation): training FLOPs per token, by the usual count (Kaplan et al. 2020;
PaLM, Chowdhery et al. 2022, appendix B),
    6 * N + 12 * layers * context * d_model
N = the parameters outside the token and position embeddings (the blocks, the final norm and the
untied head: 2 FLOPs per weight per token forward, 4 backward); the second term is the attention
scores QK^T and the weighted sum of values, forward and backward, counted for the full
context x context square as PaLM does (causal masking does not halve it in this count). MFU = that x
tokens/s / this machine's float32 matmul peak, measured in the same process
(`jaxdl.runtime.matmul_peak_gflops()`, a jitted square matmul) after the training rounds. The
same peak is the denominator for both frameworks.

Quality: after --steps steps, the validation loss of both by one definition: the mean next-token
cross-entropy in nats over the whole validation split cut into non-overlapping windows of
--context (`eval_windows`; jaxdl: LanguageModel.evaluate; torch: `lm_evaluate` of
benchmarks/torch_lm.py, the masked sum of cross-entropy over the same batches / the number of
masked targets). bpc = that in bits per character. The two runs start equal but float32 rounding
makes them drift apart, so the losses agree only statistically: the target is |difference| <= 0.03 nats.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks.torch_gpt` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import available_cpus, describe, pin_threads, write_json  # noqa: E402

LR, CLIP_NORM = 1e-3, 1.0
INITIAL_LOSS_TOLERANCE = 1e-4
VAL_LOSS_TARGET = 0.03


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4, help="transformer blocks")
    p.add_argument("--heads", type=int, default=4, help="attention heads per block")
    p.add_argument("--d-model", type=int, default=128, help="model width")
    p.add_argument("--context", type=int, default=64, help="tokens per training window and per validation window (max_len)")
    p.add_argument("--batch-size", type=int, default=12, help="windows per training step")
    p.add_argument("--steps", type=int, default=500, help="training steps of each framework (all of them timed but the first)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds the steps are split into")
    p.add_argument("--threads", type=int, default=available_cpus(),
                   help="torch.set_num_threads; below the CPUs available, also pins the process (so XLA) "
                        "to that many cores (default: all available)")
    p.add_argument("--no-scan", dest="scan", action="store_false",
                   help="jaxdl: unroll the layers (DecoderLM(scan=False)) instead of one nn.scan; on a 2-core "
                        "CPU about 1.18x the tokens/s at 4 layers, with the same compile time")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the training windows")
    p.add_argument("--quick", action="store_true", help="smoke test: 6 steps in 2 rounds (overrides --steps/--rounds)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 6, 2
    for name in ("layers", "heads", "d_model", "context", "batch_size", "rounds", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.d_model % args.heads:
        p.error(f"--heads {args.heads} must divide --d-model {args.d_model}")
    if args.steps < args.rounds + 1:
        p.error(f"--steps must be at least --rounds + 1 = {args.rounds + 1} (one untimed first step, then "
                "at least one step per round)")
    return args


def training_flops_per_token(n_params: int, n_embedding: int, layers: int, context: int, d_model: int) -> int:
    """6 N + 12 L T D: N the non-embedding parameters (head included), see the module docstring."""
    return 6 * (n_params - n_embedding) + 12 * layers * context * d_model


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    pin_threads(args.threads)
    from jaxdl import runtime

    xla_flags = runtime.configure_xla()  # the same process settings as the experiment scripts

    import jax
    import numpy as np
    import torch

    from benchmarks.torch_gpt import TorchGPT, gpt_params_to_torch
    from benchmarks.torch_lm import as_tokens, lm_evaluate, lm_loss
    from jaxdl.data.text import check_seq_len, eval_windows, load_text, window_batches
    from jaxdl.models.transformer import DecoderLM
    from jaxdl.runtime import matmul_peak_gflops
    from jaxdl.tasks.language_model import LanguageModel
    from jaxdl.train import TrainState, make_optimizer, make_train_step
    from jaxdl.train.state import num_params

    torch.set_num_threads(args.threads)
    cpus = available_cpus()
    B, T, D, L = args.batch_size, args.context, args.d_model, args.layers
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
    model = DecoderLM(V, d_model=D, num_layers=L, num_heads=args.heads, max_len=T, dropout=0.0,
                      pos="learned", norm="layer", tie_embeddings=False, scan=args.scan)
    task = LanguageModel(model)
    params = task.init(jax.random.key(args.seed), {"tokens": batches_np[0]})
    optimizer = make_optimizer("adam", LR, 0.0, clip_norm=CLIP_NORM)

    # PyTorch: jaxdl's initial weights, the same optimizer
    net = gpt_params_to_torch(params, TorchGPT(V, D, L, args.heads, T)).train()
    torch_opt = torch.optim.Adam(net.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    n_params = num_params(params)
    n_torch = sum(p.numel() for p in net.parameters())
    n_embedding = sum(params["params"][k]["embedding"].size for k in ("token_embedding", "position_embedding"))
    flops_per_token = training_flops_per_token(n_params, n_embedding, L, T, D)
    print(f"GPT: {L} layers x {args.heads} heads ({'scanned' if args.scan else 'unrolled'} in jaxdl), width {D}, "
          f"context {T}, {n_params:,} parameters "
          f"({n_params - n_embedding:,} outside the embeddings; torch {n_torch:,}); batch {B} x {T} = "
          f"{tokens_per_step} tokens per step; {flops_per_token / 1e6:.2f} MFLOP per token trained")
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

    # the denominator of MFU: this process's float32 matmul rate, after the rounds (not during them)
    peak_gflops = matmul_peak_gflops()

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
                      "first_step_s": first_step_s[name], "model_gflops": flops_per_token * tps / 1e9,
                      "mfu": flops_per_token * tps / (peak_gflops * 1e9), "val_loss": val["loss"],
                      "val_bpc": val["bpc"], "val_accuracy": val["accuracy"], "tokens_per_s_rounds": per_round[name]}
    rows["jaxdl"]["eval_s"], rows["PyTorch"]["eval_s"] = jax_eval_s, torch_eval_s
    ratio = rows["jaxdl"]["tokens_per_s"] / rows["PyTorch"]["tokens_per_s"]
    curves = {"jaxdl": [float(x) for x in jax.device_get(jax_losses)], "PyTorch": [float(x) for x in torch_losses]}
    tail = max(1, args.steps // 10)
    train_tail = {n: float(np.mean(c[-tail:])) for n, c in curves.items()}

    print(f"\nGPT char LM, {L} layers x {args.heads} heads{'' if args.scan else ' (jaxdl unrolled: --no-scan)'}, "
          f"width {D}, context {T}, batch {B}, {args.steps} steps, "
          f"Adam {LR:g} + clip {CLIP_NORM:g}; medians over {args.rounds} interleaved rounds; "
          f"MFU against a measured float32 matmul peak of {peak_gflops:,.1f} GFLOP/s\n")
    print("| framework | tokens/s | ms/step | compile s | GFLOP/s | MFU | val loss (nats) | val bpc |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        comp = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "- (eager)"
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['ms_per_step']:.1f} | {comp} | {r['model_gflops']:.1f} "
              f"| {100 * r['mfu']:.1f}% | {r['val_loss']:.4f} | {r['val_bpc']:.4f} |")
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
    print(f"MFU: {flops_per_token:,} FLOPs per token trained (6 x {n_params - n_embedding:,} non-embedding "
          f"parameters + 12 x {L} x {T} x {D} attention) x tokens/s / {peak_gflops:,.1f} GFLOP/s")
    machine = describe(xla_flags)
    load_at_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"1-minute load average: {load_at_start:.2f} at the start (other work), {load_at_end:.2f} at the end "
          f"(this run included); on a shared machine, the throughputs depend on it")

    figures = {"config": vars(args), "rows": rows, "jax_over_torch": ratio, "val_loss_diff": val_diff,
               "max_train_loss_diff": max_train_diff, "initial_loss": {"jaxdl": jax_initial, "PyTorch": torch_initial},
               "train_loss_curves": curves, "num_params": n_params, "non_embedding_params": n_params - n_embedding,
               "flops_per_token": flops_per_token, "matmul_peak_gflops": peak_gflops, **machine,
               "load_average_1min": {"start": load_at_start, "end": load_at_end}, "device": jax.devices()[0].device_kind}
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
