"""GPT character language model, jaxdl against PyTorch in one run: training speed, MFU and validation loss.

    python benchmarks/lm_vs_torch.py [--layers 4] [--heads 4] [--d-model 128] [--context 64]
                                     [--batch-size 12] [--steps 500] [--rounds 10] [--threads N]
                                     [--unroll 0] [--no-scan] [--seed 0] [--quick] [--json PATH]

The model: a decoder-only transformer, 4 pre-norm layers of 4 heads, width 128, context 64, learned
positions, LayerNorm, an untied head, dropout 0, on the embedded Shakespeare corpus with the
character tokenizer (`load_text("shakespeare")`), batches of 12 windows.
  jaxdl    DecoderLM (the layers one nn.scan, all of its iterations unrolled as in experiments/transformer.py;
           --unroll K: K blocks per iteration; --no-scan: a Python loop over the layers)
           + LanguageModel.loss, the engine's jitted `make_train_step`
  PyTorch  TorchGPT (benchmarks/torch_gpt.py): the same arithmetic, F.scaled_dot_product_attention(is_causal=True), eager

Same start, same data, same optimizer: the torch model gets jaxdl's initial weights (checked: both
give the same loss on the first batch, else the script stops), both train on the very same
`window_batches(train, batch, context, seed)` arrays, with Adam(lr 1e-3, betas 0.9/0.999, eps 1e-8,
no weight decay) after clipping the gradients to global norm 1.0 (`make_optimizer("adam", 1e-3, 0,
clip_norm=1)`; torch.optim.Adam after torch.nn.utils.clip_grad_norm_), the settings of
benchmarks/rnn_vs_torch.py.

Speed (the harness of benchmarks/lm_harness.py, shared with the other LM benchmark): JAX's
compile (`.lower(...).compile()`) is timed apart, and the first step of each framework
is run apart (unmeasured). The other --steps - 1 steps of both runs are split into --rounds rounds;
each round runs a block of jaxdl steps then the same number of torch steps (which goes first
alternates from round to round), continuing the same two training runs, so machine noise hits both
alike. Each framework's tokens/s is the median over rounds of (steps x batch x context) / seconds;
the ratio is jaxdl's over torch's.

MFU (model FLOPs utilisation): training FLOPs per token, by the usual count (Kaplan et al. 2020;
PaLM, Chowdhery et al. 2022, appendix B),
    6 * N + 12 * layers * context * d_model
N = the weights used in matmuls (every kernel of the blocks and the untied head; embedding lookups,
norms and biases are not matmuls: 2 FLOPs per weight per token forward, 4 backward;
`jaxdl.models.transformer.training_flops_per_token`; equal to the matmul FLOPs that experiments/transformer.py
counts from its step's jaxpr, jaxdl/train/flops.py); the second term is the attention
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

--quick checks the script end to end in well under a minute (most of it compiling): 1 layer x
2 heads, width 32, context 16, batch 8, 6 steps in 2 rounds (any of these given as flags still
wins); its figures measure nothing.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make `benchmarks.torch_gpt` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.lm_harness import (LMComparison, add_common_tail, add_gpt_args, add_run_args,  # noqa: E402
                                   check_heads, finish_args)
from benchmarks.machine import make_parser  # noqa: E402
from jaxdl import cli  # noqa: E402

LR, CLIP_NORM = 1e-3, 1.0
QUICK = {"layers": 1, "heads": 2, "d_model": 32, "context": 16, "batch_size": 8}  # with 6 steps in 2 rounds


def parse_args(argv):
    p = make_parser(__doc__)
    add_gpt_args(p)
    p.add_argument("--context", type=int, default=64, help="tokens per training window and per validation window (max_len)")
    add_run_args(p, batch_size=12, steps=500)
    p.add_argument("--unroll", type=int, default=0,
                   help="jaxdl: blocks per iteration of the layer scan, 0 = all (as experiments/transformer.py)")
    p.add_argument("--no-scan", dest="scan", action="store_false",
                   help="jaxdl: unroll the layers (DecoderLM(scan=False)) instead of one nn.scan "
                        "(docs/speed.md has the two measured side by side)")
    add_common_tail(p)
    return finish_args(p, argv, ("layers", "heads", "d_model", "context", "batch_size", "rounds", "threads"),
                       check, quick=QUICK)


def check(p, args) -> None:
    check_heads(p, args)
    if args.unroll < 0:
        p.error(f"--unroll must be >= 0 (0 = all the layers), got {args.unroll}")


def layers_name(args) -> str:
    if not args.scan:
        return "a Python loop over the layers in jaxdl: --no-scan"
    unroll = min(args.unroll or args.layers, args.layers)
    return "jaxdl: one scan, fully unrolled" if unroll == args.layers else f"jaxdl: one scan, {unroll} per iteration"


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    bench = LMComparison(args, args.context, __file__)  # pins the threads, configures XLA as the experiments, loads the data
    import jax

    from benchmarks.torch_gpt import TorchGPT, gpt_params_to_torch
    from jaxdl.models.transformer import DecoderLM, training_flops_per_token
    from jaxdl.runtime import matmul_peak_gflops
    from jaxdl.tasks.language_model import LanguageModel

    B, T, D, L, V = args.batch_size, args.context, args.d_model, args.layers, bench.vocab_size
    model = DecoderLM(V, d_model=D, num_layers=L, num_heads=args.heads, max_len=T, dropout=0.0,
                      pos="learned", norm="layer", tie_embeddings=False, scan=args.scan,
                      unroll=args.unroll or L)
    task = LanguageModel(model)
    params = task.init(jax.random.key(args.seed), {"tokens": bench.batches_np[0]})
    net = gpt_params_to_torch(params, TorchGPT(V, D, L, args.heads, T)).train()
    n_params, n_torch = bench.set_models(task, params, net)
    n_embedding = sum(params["params"][k]["embedding"].size for k in ("token_embedding", "position_embedding"))
    flops_per_token = training_flops_per_token(params, L, T, D)  # = what flops.py counts in the step (tested)
    n_matmul = round((flops_per_token - 12 * L * T * D) / 6)
    print(f"GPT: {L} layers x {args.heads} heads ({layers_name(args)}), width {D}, "
          f"context {T}, {n_params:,} parameters "
          f"({n_params - n_embedding:,} outside the embeddings; torch {n_torch:,}); batch {B} x {T} = "
          f"{bench.tokens_per_step} tokens per step; {flops_per_token / 1e6:.2f} MFLOP per token trained")
    bench.check_same_start()

    bench.train(LR, CLIP_NORM)
    # the denominator of MFU: this process's float32 matmul rate, after the rounds (not during them)
    peak_gflops = matmul_peak_gflops()
    bench.validate()
    bench.summarize(lambda tps: {"model_gflops": flops_per_token * tps / 1e9,
                                 "mfu": flops_per_token * tps / (peak_gflops * 1e9)})
    print(f"\nGPT char LM, {L} layers x {args.heads} heads ({layers_name(args)}), "
          f"width {D}, context {T}, batch {B}, {args.steps} steps, "
          f"Adam {LR:g} + clip {CLIP_NORM:g}; medians over {args.rounds} interleaved rounds; "
          f"MFU against a measured float32 matmul peak of {peak_gflops:,.1f} GFLOP/s\n")
    bench.print_table([("GFLOP/s", lambda r: f"{r['model_gflops']:.1f}"), ("MFU", lambda r: f"{100 * r['mfu']:.1f}%")])
    bench.print_summary()
    print(f"MFU: {flops_per_token:,.0f} FLOPs per token trained (6 x {n_matmul:,} weights used in matmuls "
          f"+ 12 x {L} x {T} x {D} attention) x tokens/s / {peak_gflops:,.1f} GFLOP/s")
    return bench.finish({"matmul_params": n_matmul, "flops_per_token": flops_per_token,
                         "matmul_peak_gflops": peak_gflops})


if __name__ == "__main__":
    cli.run(main)
