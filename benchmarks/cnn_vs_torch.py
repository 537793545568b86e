"""MyNet training-step speed: jaxdl (XLA) against the seed's PyTorch CNN, side by side on this machine.

    python benchmarks/cnn_vs_torch.py [--batch-size 64] [--steps 30] [--warmup 5] [--image-size 48]
                                      [--rounds 5] [--threads N] [--quick] [--json PATH]

Three rows, all one Adam(lr 1e-3, weight decay 1e-4, coupled L2) step on a batch of generated data:
  jaxdl                 MyNet, the engine's `make_train_step`, dropout on, already-normalised float32 images
  PyTorch               MY_NET in train mode, torch.optim.Adam, the same float32 images (NCHW)
  jaxdl + augmentation  the full training step: uint8 28x28x1 images through ImagePreprocess (resize to
                        the model's size, rotation, brightness, contrast, grey->RGB, normalise) inside the loss

Measurement: JAX compile time (`.lower(...).compile()`) is timed and reported apart; then `--warmup` steps
each; then `--rounds` rounds, each running a block of steps for every row in turn, so machine noise hits
all rows alike; each row's figure is the median over rounds of its per-round throughput. The fraction of
peak divides the achieved FLOP rate (images/s x training FLOPs per image) by the better of the two
frameworks' measured float32 matmul rates. Training FLOPs per image are 3x the forward FLOPs of the convs and
dense layers (forward, plus backward's gradients with respect to activations and to weights, each about
one forward), counted from the layer shapes: 578 MFLOP for 48x48x3 and 10 classes.

--quick checks the script end to end in well under a minute (most of it compiling): 16x16 images,
batch 8, 4 steps in 2 rounds after 1 warmup step, a 256 x 256 matmul peak (any of these given as
flags still wins); its figures measure nothing.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks.torch_models` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import (available_cpus, check_positive, describe, make_parser, parse_quick,  # noqa: E402
                                pin_threads, require_torch, write_json)
from jaxdl import cli  # noqa: E402

MNIST_MEAN_STD = ((0.1307,), (0.3081,))
QUICK = {"batch_size": 8, "steps": 4, "warmup": 1, "image_size": 16, "rounds": 2, "matmul_size": 256}


def parse_args(argv):
    p = make_parser(__doc__)
    p.add_argument("--batch-size", type=int, default=64, help="images per training step")
    p.add_argument("--steps", type=int, default=30, help="measured steps per row, split over the rounds")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured steps per row after compiling")
    p.add_argument("--image-size", type=int, default=48, help="model input height and width (multiple of 4)")
    p.add_argument("--classes", type=int, default=10, help="number of classes")
    p.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for both frameworks (pins the process to that many cores); 0: all")
    p.add_argument("--matmul-size", type=int, default=2048, help="n for the n x n float32 matmul peak")
    p.add_argument("--no-augment-row", action="store_true", help="skip the jaxdl + augmentation row")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few steps: checks the script (see above)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parse_quick(p, argv, QUICK)
    if args.image_size % 4 or args.image_size <= 0:
        p.error(f"--image-size must be a positive multiple of 4, got {args.image_size}")
    check_positive(p, args, ("batch_size", "steps", "rounds", "classes", "matmul_size"))
    if args.warmup < 0 or args.threads < 0:
        p.error("--warmup and --threads must be at least 0")
    return args


def training_flops_per_image(image_size: int, in_channels: int, num_classes: int) -> tuple[int, list]:
    """3 x forward FLOPs (2 per multiply-add) of MyNet's convs and dense layers, from their shapes."""
    S = image_size
    layers = [  # (name, output positions, fan-in (multiply-adds per output), outputs per position)
        ("conv1", S * S, 3 * 3 * in_channels, 32),
        ("conv2", S * S, 3 * 3 * 32, 64),
        ("conv3", (S // 2) ** 2, 3 * 3 * 64, 128),
        ("fc1", 1, (S // 4) ** 2 * 128, 512),
        ("fc2", 1, 512, num_classes),
    ]
    forward = [(name, 2 * positions * fan_in * outputs) for name, positions, fan_in, outputs in layers]
    return 3 * sum(f for _, f in forward), forward


def matmul_peaks(n: int, repeats: int = 5) -> dict[str, float]:
    """Best-of-`repeats` float32 n x n matmul rate in GFLOP/s, for jnp.dot and torch.matmul."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    flops = 2 * n ** 3
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    dot = jax.jit(jnp.dot)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    dot(ja, jb).block_until_ready()
    best_jax = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dot(ja, jb).block_until_ready()
        best_jax = min(best_jax, time.perf_counter() - t)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch.matmul(ta, tb)
    best_torch = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(ta, tb)
        best_torch = min(best_torch, time.perf_counter() - t)
    return {"jax": flops / best_jax / 1e9, "torch": flops / best_torch / 1e9}


def build_jax_rows(args):
    """{row name: (compiled step, state, batch, compile seconds)} for the jaxdl rows."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxdl.data.augment import ImagePreprocess
    from jaxdl.models.cnn import MyNet
    from jaxdl.tasks.classification import ImageClassifier
    from jaxdl.train import TrainState, make_optimizer, make_train_step

    B, S, K = args.batch_size, args.image_size, args.classes
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.integers(0, K, B), jnp.int32)
    model = MyNet(num_classes=K, image_size=S, in_channels=3)

    def loss_fn(params, batch, key):
        logits_BK = model.apply(params, batch["image"], train=True, rngs={"dropout": key})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits_BK, batch["label"]).mean()
        return loss, {"loss": loss}

    rows = {}
    images = jnp.asarray(rng.standard_normal((B, S, S, 3), dtype=np.float32))
    specs = [("jaxdl", loss_fn, {"image": images, "label": labels}, None)]
    if not args.no_augment_row:
        classifier = ImageClassifier(model, ImagePreprocess(S, 3, *MNIST_MEAN_STD))
        raw = jnp.asarray(rng.integers(0, 256, (B, 28, 28, 1)), jnp.uint8)
        specs.append(("jaxdl + augmentation", classifier.loss, {"image": raw, "label": labels}, classifier))
    for name, loss, batch, classifier in specs:
        init_key = jax.random.key(0)
        params = classifier.init(init_key, batch) if classifier else model.init(init_key, model.example_input())
        optimizer = make_optimizer("adam", 1e-3, 1e-4)
        state = TrainState.create(params, optimizer, seed=0)
        train_step = make_train_step(loss, optimizer)
        t = time.perf_counter()
        compiled = train_step.lower(state, batch).compile()
        rows[name] = (compiled, state, batch, time.perf_counter() - t)
    return rows


def build_torch_row(args):
    import numpy as np
    import torch
    import torch.nn.functional as F

    from benchmarks.torch_models import MY_NET

    B, S, K = args.batch_size, args.image_size, args.classes
    torch.manual_seed(0)
    net = MY_NET(num_classes=K, in_channels=3, image_size=S).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((B, 3, S, S), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, K, B))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    require_torch()
    pin_threads(args.threads)
    from jaxdl import runtime

    xla_flags = runtime.configure(__file__)  # the same process settings as experiments/cnn.py

    import jax
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cpus = available_cpus()

    flops_per_image, forward = training_flops_per_image(args.image_size, 3, args.classes)
    print(f"MyNet {args.image_size}x{args.image_size}x3, {args.classes} classes, batch {args.batch_size}; "
          f"{cpus} CPUs in use (of {os.cpu_count()}), torch threads {torch.get_num_threads()}, "
          f"jax device {jax.devices()[0].device_kind}")
    print("forward MFLOP per image: " + ", ".join(f"{n} {f / 1e6:.2f}" for n, f in forward)
          + f"; training = 3 x forward = {flops_per_image / 1e6:.1f} MFLOP per image")

    peaks = matmul_peaks(args.matmul_size)
    peak = max(peaks.values())
    print(f"float32 matmul {args.matmul_size}x{args.matmul_size}: jnp.dot {peaks['jax']:.1f} GFLOP/s, "
          f"torch.matmul {peaks['torch']:.1f} GFLOP/s")

    jax_rows = build_jax_rows(args)
    torch_step = build_torch_row(args)
    t = time.perf_counter()
    torch_step()
    torch_first_step_s = time.perf_counter() - t

    states = {name: state for name, (_, state, _, _) in jax_rows.items()}

    def run_jax(name, n):
        compiled, _, batch, _ = jax_rows[name]
        state, metrics = states[name], None
        for _ in range(n):
            state, metrics = compiled(state, batch)  # the state is donated: always keep the new one
        jax.block_until_ready((state, metrics))
        states[name] = state

    def run_torch(n):
        for _ in range(n):
            torch_step()

    runners = {name: (lambda n, name=name: run_jax(name, n)) for name in jax_rows}
    runners["PyTorch"] = run_torch
    order = ["jaxdl", "PyTorch"] + [n for n in jax_rows if n != "jaxdl"]
    for name in order:
        runners[name](args.warmup)

    block = max(1, args.steps // args.rounds)
    per_round = {name: [] for name in order}
    for _ in range(args.rounds):
        for name in order:
            t = time.perf_counter()
            runners[name](block)
            per_round[name].append(block * args.batch_size / (time.perf_counter() - t))

    rows = {}
    for name in order:
        ips = statistics.median(per_round[name])
        rows[name] = {"images_per_s": ips, "ms_per_step": 1e3 * args.batch_size / ips,
                      "fraction_of_peak": ips * flops_per_image / (peak * 1e9),
                      "images_per_s_rounds": per_round[name]}
    ratio = rows["jaxdl"]["images_per_s"] / rows["PyTorch"]["images_per_s"]

    print(f"\n{args.rounds} interleaved rounds of {block} steps per row; medians over rounds\n")
    print(f"{'framework':<22} {'images/s':>10} {'ms/step':>10} {'fraction of peak':>17} {'rounds (images/s)':>24}")
    for name in order:
        r = rows[name]
        spread = f"{min(r['images_per_s_rounds']):.0f} - {max(r['images_per_s_rounds']):.0f}"
        print(f"{name:<22} {r['images_per_s']:>10.1f} {r['ms_per_step']:>10.1f} {r['fraction_of_peak']:>17.3f} "
              f"{spread:>24}")
    compile_s = {name: c for name, (_, _, _, c) in jax_rows.items()}
    print(f"\njax / torch throughput: {ratio:.2f}x")
    print("compile seconds: " + ", ".join(f"{n} {s:.2f}" for n, s in compile_s.items())
          + f" (PyTorch is eager; its first step took {torch_first_step_s:.2f} s)")
    print(f"peak used for the fraction: {peak:.1f} GFLOP/s (better of jnp.dot and torch.matmul); "
          f"{flops_per_image / 1e6:.1f} MFLOP per image per training step")
    machine = describe(xla_flags)

    figures = {
        "config": vars(args), "rows": rows, "jax_over_torch": ratio, "compile_seconds": compile_s,
        "torch_first_step_seconds": torch_first_step_s, "matmul_gflops": peaks, "peak_gflops": peak,
        "training_mflop_per_image": flops_per_image / 1e6,
        "forward_mflop_per_image": {n: f / 1e6 for n, f in forward},
        **machine, "device": jax.devices()[0].device_kind,
    }
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    cli.run(main)
