"""The accelerator suite: one short run on a GPU or TPU that prints its tables.

    python benchmarks/accelerator.py [--only cnn|lm] [--steps 50] [--batch-sizes 64,512]
                                     [--lm-steps 2000] [--quick] [--json PATH]

MyNet rows (--only cnn): generated MNIST-shaped data (accelerator machines need no internet). The
MyNet training step (Adam, dropout on) at batch 64 and 512, on normalised float32 images and through
the full on-device augmentation path (uint8 28x28x1 -> 48x48x3). Reports compile time apart from
steady state, and the fraction of this device's measured float32 matmul rate (default precision,
so TF32 on recent NVIDIA GPUs, the same precision the model's matmuls use).

GPT row (--only lm): a character language model trained for a fixed number of steps on the
embedded Shakespeare corpus (`load_text("shakespeare")`, offline): `DecoderLM`, 6 layers x 6 heads,
width 384, context 256, learned positions, LayerNorm, untied head, dropout 0 (a speed figure:
dropout 0.2 would regularise a long run but adds the mask draws to every step and is not what the
throughput should measure), computing in bfloat16 (params and Adam state float32), attention by
cuDNN's fused kernel on GPUs (`implementation="cudnn"`; if that fails to build, XLA's, and the row
says so), XLA's elsewhere. AdamW (lr 1e-3, weight decay 0.1, 100 warmup steps then cosine decay
over --lm-steps, gradients clipped to global norm 1.0), batches of 64 random windows
(`window_batches`), the engine's jitted `make_train_step`.
  tokens/s   steady state: the train step is compiled apart (timed as "compile s"); the first
             --lm-warmup steps run untimed; tokens/s = the other steps x 64 x 256 / their seconds.
  MFU        tokens/s x `training_flops_per_token` (6 N + 12 L T D, PaLM's count) / this device's
             measured bfloat16 matmul rate (`runtime.matmul_peak_gflops(dtype="bfloat16")`).
  val loss   after all --lm-steps steps: `LanguageModel.evaluate` over the whole validation split in
             non-overlapping windows of 256 (nats per character; bpc = that / ln 2).
--quick shrinks both to a smoke test that runs on a laptop CPU in well under a minute (most of it
compiling): MyNet at 16x16, batch 8, 3 timed steps, a 256 x 256 matmul peak; the GPT row 1 layer x
2 heads, width 32, context 16, batch 8, 10 steps (flags given still win); its figures say nothing
about any accelerator.
Later issues add their model families' rows here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cnn_vs_torch import build_jax_rows, training_flops_per_image  # noqa: E402
from benchmarks.machine import make_parser, parse_quick  # noqa: E402
from jaxdl import cli  # noqa: E402

# the GPT row: (layers, heads, width, context, batch); --quick's is a CPU smoke test
LM_FULL = dict(layers=6, heads=6, d_model=384, context=256, batch=64)
LM_QUICK = dict(layers=1, heads=2, d_model=32, context=16, batch=8)
# the MyNet rows: image size and matmul-peak size (the accelerator's, a CPU's); --quick's are tiny
CNN_FULL = dict(image_size=48, matmul_size={"accelerator": 8192, "cpu": 2048})
CNN_QUICK = dict(image_size=16, matmul_size={"accelerator": 256, "cpu": 256})
QUICK = {"steps": 3, "batch_sizes": "8", "lm_steps": 10, "lm_warmup": 5}
LM_LR, LM_WEIGHT_DECAY, LM_WARMUP, LM_CLIP = 1e-3, 0.1, 100, 1.0


def time_steps(compiled, state, batch, steps: int, warmup: int = 3) -> float:
    """Steady-state seconds per step (the state is donated: always keep the new one)."""
    import jax

    for _ in range(warmup):
        state, m = compiled(state, batch)
    jax.block_until_ready((state, m))
    t = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, batch)
    jax.block_until_ready((state, m))
    return (time.perf_counter() - t) / steps


def cnn_rows(args, peak: float) -> list[dict]:
    S = (CNN_QUICK if args.quick else CNN_FULL)["image_size"]
    flops, _ = training_flops_per_image(S, 3, 10)
    print(f"MyNet {S}x{S}x3: {flops / 1e6:.0f} MFLOP/image/step")
    rows = []
    for bs in args.batch_sizes:
        ns = argparse.Namespace(batch_size=bs, image_size=S, classes=10, no_augment_row=False)
        for name, (compiled, state, batch, compile_s) in build_jax_rows(ns).items():
            sec = time_steps(compiled, state, batch, args.steps)
            rows.append({"row": f"MyNet {name}", "batch": bs, "images_per_s": bs / sec, "ms_per_step": 1e3 * sec,
                         "compile_s": compile_s, "fraction_of_peak": bs / sec * flops / (peak * 1e9)})
    print(f"\n{'row':<30} {'batch':>6} {'images/s':>11} {'ms/step':>9} {'compile s':>10} {'of peak':>8}")
    for r in rows:
        print(f"{r['row']:<30} {r['batch']:>6} {r['images_per_s']:>11,.0f} {r['ms_per_step']:>9.2f} "
              f"{r['compile_s']:>10.2f} {r['fraction_of_peak']:>8.3f}")
    return rows


def build_lm(cfg: dict, vocab: int, steps: int, implementation: str | None, first_batch, eval_batch):
    """(task, train state, compiled train step, compile seconds) for the GPT row. One train step (on a
    copy of the state: the step donates it) and one validation batch are run here, so that an
    attention kernel that builds but fails when run fails here, before the timed steps."""
    import jax
    import jax.numpy as jnp

    from jaxdl.models.transformer import DecoderLM
    from jaxdl.tasks.language_model import LanguageModel
    from jaxdl.train import TrainState, make_optimizer, make_train_step

    model = DecoderLM(vocab, d_model=cfg["d_model"], num_layers=cfg["layers"], num_heads=cfg["heads"],
                      max_len=cfg["context"], dropout=0.0, pos="learned", norm="layer", tie_embeddings=False,
                      dtype=jnp.bfloat16, implementation=implementation)
    task = LanguageModel(model)
    params = task.init(jax.random.key(0), first_batch)
    optimizer = make_optimizer("adamw", LM_LR, LM_WEIGHT_DECAY, schedule="cosine",
                               warmup_steps=min(LM_WARMUP, steps // 2), total_steps=steps, clip_norm=LM_CLIP)
    state = TrainState.create(params, optimizer, seed=0)
    t = time.perf_counter()
    compiled = make_train_step(task.loss, optimizer).lower(state, first_batch).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(jax.tree.map(jnp.copy, state), first_batch))
    task.evaluate(params, [eval_batch])
    return task, state, compiled, compile_s


def lm_row(args, platform: str) -> dict:
    import jax

    from jaxdl.data.text import check_seq_len, eval_windows, load_text, window_batches
    from jaxdl.models.transformer import training_flops_per_token
    from jaxdl.runtime import matmul_peak_gflops
    from jaxdl.train.state import num_params

    cfg = LM_QUICK if args.quick else LM_FULL
    L, T, D, B, steps = cfg["layers"], cfg["context"], cfg["d_model"], cfg["batch"], args.lm_steps
    warmup = min(args.lm_warmup, steps - 1)
    data = load_text("shakespeare")
    check_seq_len(data, T)
    V = data.tokenizer.vocab_size
    batches = window_batches(data.train, B, T, 0)
    first = {"tokens": batches[0]["tokens"]}
    eval_batch = next(eval_windows(data.valid, T, B))

    wanted = "cudnn" if platform == "gpu" else None
    attention = wanted or "xla"
    try:
        task, state, compiled, compile_s = build_lm(cfg, V, steps, wanted, first, eval_batch)
    except Exception as e:  # cuDNN refuses some shapes/dtypes/versions: XLA's attention always builds
        if wanted is None:
            raise
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        print(f"note: cudnn attention failed ({reason}); falling back to xla")
        attention = f"xla (cudnn failed: {type(e).__name__})"
        task, state, compiled, compile_s = build_lm(cfg, V, steps, None, first, eval_batch)
    flops_per_token = training_flops_per_token(state.params, L, T, D)
    n_params = num_params(state.params)
    print(f"\nGPT char LM{' (--quick: a CPU smoke test)' if args.quick else ''}: {L} layers x {cfg['heads']} heads, "
          f"width {D}, context {T}, vocab {V}, {n_params:,} parameters, bf16, attention {attention}; batch {B}, "
          f"{steps} steps of AdamW {LM_LR:g} (wd {LM_WEIGHT_DECAY:g}, warmup {min(LM_WARMUP, steps // 2)}, cosine, "
          f"clip {LM_CLIP:g}); {flops_per_token / 1e6:.1f} MFLOP per token trained", flush=True)

    metrics, batch = None, first
    t = time.perf_counter()
    for i in range(steps):
        if i == warmup:  # steady state from here: everything before it (the first steps) is untimed
            jax.block_until_ready((state, metrics))
            t = time.perf_counter()
        state, metrics = compiled(state, batch)  # the state is donated: keep the new one
        batch = batches[i + 1]
    jax.block_until_ready((state, metrics))
    train_s = time.perf_counter() - t
    tokens_per_s = (steps - warmup) * B * T / train_s
    peak = matmul_peak_gflops(8192 if platform != "cpu" else 512, dtype="bfloat16")
    t = time.perf_counter()
    val = task.evaluate(state.params, eval_windows(data.valid, T, B), data.tokens_per_char)
    eval_s = time.perf_counter() - t
    row = {"row": "GPT char LM", "layers": L, "heads": cfg["heads"], "d_model": D, "context": T, "batch": B,
           "steps": steps, "timed_steps": steps - warmup, "attention": attention, "num_params": n_params,
           "tokens_per_s": tokens_per_s, "ms_per_step": 1e3 * B * T / tokens_per_s, "compile_s": compile_s,
           "flops_per_token": flops_per_token, "bf16_matmul_gflops": peak,
           "mfu": tokens_per_s * flops_per_token / (peak * 1e9), "train_loss": float(metrics["loss"]),
           "val_loss": val["loss"], "val_bpc": val["bpc"], "eval_s": eval_s, "quick": args.quick}
    print(f"\n{'row':<30} {'batch':>6} {'tokens/s':>11} {'ms/step':>9} {'compile s':>10} {'MFU':>7} "
          f"{'val loss':>9} {'val bpc':>8}  attention")
    print(f"{row['row']:<30} {B:>6} {tokens_per_s:>11,.0f} {row['ms_per_step']:>9.2f} {compile_s:>10.2f} "
          f"{100 * row['mfu']:>6.1f}% {val['loss']:>9.4f} {val['bpc']:>8.4f}  {attention}")
    print(f"({steps} steps, {steps - warmup} timed; bf16 matmul peak {peak:,.0f} GFLOP/s; final train loss "
          f"{row['train_loss']:.4f}; log(vocab) = {math.log(V):.3f}; validation pass {eval_s:.1f} s)")
    return row


def parse_args(argv):
    p = make_parser(__doc__)
    p.add_argument("--only", choices=("cnn", "lm"), help="run only the MyNet rows or only the GPT row (default: both)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per MyNet row")
    p.add_argument("--batch-sizes", default="64,512", help="comma-separated MyNet batch sizes")
    p.add_argument("--lm-steps", type=int, default=2000, help="GPT training steps")
    p.add_argument("--lm-warmup", type=int, default=20, help="first GPT steps left out of tokens/s")
    p.add_argument("--quick", action="store_true", help="shrink every row to a CPU smoke test (see above)")
    p.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parse_quick(p, argv, QUICK)
    if args.lm_steps < 2 or args.lm_warmup < 0 or args.steps < 1:
        p.error("--lm-steps must be at least 2, --lm-warmup at least 0, --steps at least 1")
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        p.error(f"--batch-sizes wants positive whole numbers separated by commas, got {args.batch_sizes!r}")
    args.batch_sizes = batch_sizes
    return args


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from jaxdl import runtime

    runtime.configure(__file__)
    import jax

    dev = jax.devices()[0]
    line = f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; jax {jax.__version__}"
    figures = {"device": f"{dev.platform} {dev.device_kind}", "jax": jax.__version__}
    if args.only != "lm":
        sizes = (CNN_QUICK if args.quick else CNN_FULL)["matmul_size"]
        peak = runtime.matmul_peak_gflops(sizes["cpu" if dev.platform == "cpu" else "accelerator"])
        print(f"{line}; float32 matmul (default precision) {peak:,.0f} GFLOP/s")
        figures.update(matmul_gflops=peak, rows=cnn_rows(args, peak))
    else:
        print(line)
    if args.only != "cnn":
        if dev.platform == "cpu" and not args.quick:
            print("note: the full GPT row on a CPU takes hours; --quick is the CPU smoke test")
        figures["lm"] = lm_row(args, dev.platform)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    cli.run(main)
