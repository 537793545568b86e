"""The accelerator suite: one short run on a GPU or TPU that prints one table.

    python benchmarks/accelerator.py [--steps 50] [--json PATH]

Generated MNIST-shaped data only (accelerator machines need no internet).
Rows: the MyNet training step (Adam, dropout on) at batch 64 and 512, on
normalised float32 images and through the full on-device augmentation path
(uint8 28x28x1 -> 48x48x3). Reports compile time apart from steady state, and
the fraction of this device's measured float32 matmul rate (default precision,
so TF32 on recent NVIDIA GPUs, the same precision the model's matmuls use).
Later issues add their model families' rows here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cnn_vs_torch import build_jax_rows, training_flops_per_image  # noqa: E402


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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50, help="timed steps per row")
    p.add_argument("--batch-sizes", default="64,512", help="comma-separated batch sizes")
    p.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = p.parse_args(argv)
    from jaxdl import runtime

    runtime.configure_xla()
    import jax

    dev = jax.devices()[0]
    peak = runtime.matmul_peak_gflops(8192 if dev.platform != "cpu" else 2048)
    flops, _ = training_flops_per_image(48, 3, 10)
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; jax {jax.__version__}; "
          f"float32 matmul (default precision) {peak:,.0f} GFLOP/s; MyNet 48x48x3: {flops / 1e6:.0f} MFLOP/image/step")
    rows = []
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        ns = argparse.Namespace(batch_size=bs, image_size=48, classes=10, no_augment_row=False)
        for name, (compiled, state, batch, compile_s) in build_jax_rows(ns).items():
            sec = time_steps(compiled, state, batch, args.steps)
            rows.append({"row": f"MyNet {name}", "batch": bs, "images_per_s": bs / sec, "ms_per_step": 1e3 * sec,
                         "compile_s": compile_s, "fraction_of_peak": bs / sec * flops / (peak * 1e9)})
    print(f"\n{'row':<30} {'batch':>6} {'images/s':>11} {'ms/step':>9} {'compile s':>10} {'of peak':>8}")
    for r in rows:
        print(f"{r['row']:<30} {r['batch']:>6} {r['images_per_s']:>11,.0f} {r['ms_per_step']:>9.2f} "
              f"{r['compile_s']:>10.2f} {r['fraction_of_peak']:>8.3f}")
    figures = {"device": f"{dev.platform} {dev.device_kind}", "jax": jax.__version__, "matmul_gflops": peak, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main()
