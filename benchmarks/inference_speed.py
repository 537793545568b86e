"""Using trained runs: jaxdl.load, predict, generate, and the jaxdl command's start-up, timed.

    python benchmarks/inference_speed.py [--cnn runs/cnn] [--lstm runs/rnn-lstm] [--gpt runs/transformer-lm]
                                         [--images 1000] [--new-tokens 200] [--repeats 3] [--quick] [--json PATH]

A run not given is made first in a temporary folder with the experiment's default model (MyNet at
48x48; the 2 x 256 LSTM; the 4-layer GPT) trained for a few steps: speed does not depend on what
the weights are. --quick checks the script end to end: tiny models for the runs it makes, 16 images,
8 new tokens, 1 repeat (any of these given as flags still wins); its figures measure nothing.

  load + predict   a fresh process: `import jaxdl`, `jaxdl.load(cnn)`, then `predict` on --images
                   digits (8x8, resized to the model's 48x48 inside the jitted function): the first
                   call (compile included) and the median of --repeats more
  generate         `LanguageModel.generate` of --new-tokens tokens after a newline (temperature 0.8):
                   first call, then tokens/s over the median of --repeats; and the wall time of the
                   whole `jaxdl generate` command, process start-up included
  start-up         the wall time of `jaxdl predict CNN one.png` and of `jaxdl info CNN` (median of --repeats)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks.machine` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import check_positive, make_parser, parse_quick, write_json  # noqa: E402
from jaxdl import cli  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKE = {  # experiment, flags: (default model, a few steps) or (--quick: tiny)
    "cnn": ("cnn.py", ["--epochs", "1"], ["--image-size", "8", "--epochs", "1"]),
    "lstm": ("rnn.py", ["--steps", "2", "--eval-every", "2", "--sample-length", "8"],
             ["--hidden", "16", "--embed", "8", "--layers", "1", "--seq-len", "16", "--steps", "2", "--eval-every", "2",
              "--sample-length", "8"]),
    "gpt": ("transformer.py", ["--steps", "2", "--eval-every", "2", "--sample-length", "8"],
            ["--layers", "1", "--d-model", "16", "--heads", "2", "--seq-len", "16", "--steps", "2", "--eval-every", "2",
             "--sample-length", "8"]),
}
FAMILY = {"cnn": "classifier", "lstm": "language_model", "gpt": "language_model"}  # what each flag's run must be
QUICK = {"images": 16, "new_tokens": 8, "repeats": 1}
LOAD_AND_PREDICT = """
import json, statistics, sys, time
t0 = time.perf_counter()
import jaxdl
from jaxdl.data.images import load_digits
t1 = time.perf_counter()
model = jaxdl.load(sys.argv[1])
t2 = time.perf_counter()
images = load_digits().test.images
images = images[[i % len(images) for i in range(int(sys.argv[2]))]]
model.predict(images)
t3 = time.perf_counter()
steady = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    model.predict(images)
    steady.append(time.perf_counter() - t)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2,
                  "steady_predict_s": statistics.median(steady), "images": len(images)}))
"""


def parse_args(argv):
    p = make_parser(__doc__)
    for name in MAKE:
        p.add_argument(f"--{name}", metavar="WORKDIR", help=f"a trained {name} run (default: make one)")
    p.add_argument("--images", type=int, default=1000, help="images per predict call")
    p.add_argument("--new-tokens", type=int, default=200, help="tokens per generate call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after the first (median reported)")
    p.add_argument("--quick", action="store_true",
                   help="tiny runs, few images and tokens: checks the script (see above)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parse_quick(p, argv, QUICK)
    check_positive(p, args, ("images", "new_tokens", "repeats"))
    return args


def check_runs(args) -> None:
    """Refuse a given run that is missing or of the wrong family, before anything is timed."""
    from jaxdl.train.description import read_info

    for name, family in FAMILY.items():
        workdir = getattr(args, name)
        if workdir is None:
            continue
        try:
            info = read_info(workdir)
        except UsageError as e:
            raise UsageError(f"--{name}: {e}") from None
        if info["family"] != family:
            raise UsageError(f"--{name} {workdir} is a {info['family']} run; give a {family} run "
                             f"(or leave --{name} out to make one)")


def run_checked(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run that must succeed; on failure the error names the command and ends its stderr."""
    done = subprocess.run(argv, capture_output=True, cwd=ROOT, **kwargs)
    if done.returncode:
        err = done.stderr if isinstance(done.stderr, str) else done.stderr.decode(errors="replace")
        raise RuntimeError(f"{' '.join(argv[:3])} ... exited with status {done.returncode}:\n{err[-2000:]}")
    return done


def jaxdl_command() -> list[str]:
    found = shutil.which("jaxdl")
    return [found] if found else [sys.executable, "-m", "jaxdl.commands"]


def wall(argv: list[str], repeats: int) -> float:
    """Median wall seconds of a command (it must succeed)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run_checked(argv)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_run(name: str, folder: str, quick: bool) -> str:
    script, flags, tiny = MAKE[name]
    workdir = os.path.join(folder, name)
    print(f"making a {name} run: experiments/{script} {' '.join(tiny if quick else flags)}", flush=True)
    run_checked([sys.executable, os.path.join("experiments", script), *(tiny if quick else flags),
                 "--workdir", workdir])
    return workdir


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from jaxdl import runtime

    runtime.configure(__file__)  # before jax is imported (check_runs imports it)
    check_runs(args)
    import jax

    import jaxdl

    with tempfile.TemporaryDirectory(prefix="jaxdl-inference-") as folder:
        runs = {name: getattr(args, name) or make_run(name, folder, args.quick) for name in MAKE}
        out = run_checked([sys.executable, "-c", LOAD_AND_PREDICT, runs["cnn"], str(args.images), str(args.repeats)],
                          text=True).stdout
        cnn = json.loads(out.strip().splitlines()[-1])
        generation = {}
        for name in ("lstm", "gpt"):
            model = jaxdl.load(runs[name])
            t = time.perf_counter()
            model.generate("", args.new_tokens)
            first = time.perf_counter() - t
            steady = []
            for r in range(args.repeats):
                t = time.perf_counter()
                model.generate("", args.new_tokens, seed=r + 1)
                steady.append(time.perf_counter() - t)
            command = wall([*jaxdl_command(), "generate", runs[name], "--max-new-tokens", str(args.new_tokens)],
                           args.repeats)
            label = f"{model.info['model']['class']}, {model.num_params:,} parameters"
            generation[name] = {"model": label, "first_call_s": first,
                                "tokens_per_s": args.new_tokens / statistics.median(steady), "command_s": command}
        png = os.path.join(folder, "one.png")
        from PIL import Image

        from jaxdl.data.images import load_digits

        Image.fromarray(load_digits().test.images[0, :, :, 0]).save(png)
        startup = {"predict_s": wall([*jaxdl_command(), "predict", runs["cnn"], png], args.repeats),
                   "info_s": wall([*jaxdl_command(), "info", runs["cnn"]], args.repeats)}
        loaded = jaxdl.load(runs["cnn"])
        cnn_model = f"{loaded.info['model']['class']} ({loaded.num_params:,} parameters)"

    dev = jax.devices()[0]
    print(f"\njaxdl {jaxdl.__version__}, jax {jax.__version__}, {dev.platform} ({os.cpu_count()} cores)\n")
    print(f"| {cnn_model}, {cnn['images']} images | seconds |\n|---|---:|")
    print(f"| `import jaxdl` (imports no jax) | {cnn['import_s']:.2f} |")
    print(f"| `jaxdl.load` (jax imported, model.json read, params restored) | {cnn['load_s']:.2f} |")
    print(f"| first predict (compile included) | {cnn['first_predict_s']:.2f} |")
    print(f"| steady predict | {cnn['steady_predict_s']:.3f} ({cnn['images'] / cnn['steady_predict_s']:,.0f} images/s) |")
    print(f"\n| generate {args.new_tokens} tokens | first call s | tokens/s (steady) | `jaxdl generate` wall s |")
    print("|---|---:|---:|---:|")
    for name, g in generation.items():
        print(f"| {name}: {g['model']} | {g['first_call_s']:.2f} | "
              f"{g['tokens_per_s']:,.0f} | {g['command_s']:.2f} |")
    print(f"\n`jaxdl predict` on one image: {startup['predict_s']:.2f} s wall; `jaxdl info`: {startup['info_s']:.2f} s")
    figures = {"config": vars(args), "predict": cnn, "generate": generation, "startup": startup,
               "jax": jax.__version__, "device": f"{dev.platform} ({os.cpu_count()} cores)"}
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    cli.run(main)
