"""What the Grain input pipeline costs each experiment's training speed, side by side on this machine.

    python benchmarks/input_pipeline.py [--rounds 3] [--only mlp,cnn,lstm,gpt,seq2seq,diffusion]
                                        [--quick] [--json PATH]

Each experiment script runs in this process as a user runs it (its own `main`, a fresh workdir,
--no-tensorboard), in two ways, alternating over --rounds rounds so machine noise hits both alike:
  pipeline   as shipped: every batch read through the Grain iterator (jaxdl/train/input.py) while
             training, as the step before it runs (this process's rows of step s, gathered,
             windowed or generated on demand)
  in memory  the same batches, each round's read whole before the round's timer starts, then
             served from a list: a pipeline that costs nothing
The figure per row is the median over rounds of the run's own steady-state speed (its summary:
compile and evaluation excluded); the ratio is pipeline / in memory (1.00 = the pipeline is free).

--quick checks the script end to end (two tiny runs of one experiment); its figures measure nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import statistics
import sys
import tempfile

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `experiments` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import available_cpus, check_positive, make_parser, parse_quick, write_json  # noqa: E402
from jaxdl import cli  # noqa: E402

# name -> (experiment module, its arguments, the summary's speed figure): each long enough for a steady state
RUNS = {
    "mlp": ("mlp", ["--task", "digits", "--epochs", "20"], "train_examples_per_sec"),
    "cnn": ("cnn", ["--epochs", "1"], "train_examples_per_sec"),
    "lstm": ("rnn", ["--steps", "60", "--eval-every", "60"], "tokens_per_sec"),
    "gpt": ("transformer", ["--arch", "lm", "--steps", "40", "--eval-every", "40"], "tokens_per_sec"),
    "seq2seq": ("transformer", ["--arch", "seq2seq", "--steps", "100", "--eval-every", "100"], "examples_per_sec"),
    "diffusion": ("diffusion", ["--steps", "100", "--eval-every", "100", "--num-samples", "1"],
                  "train_examples_per_sec"),
}
QUICK = {"rounds": 1, "only": "mlp"}
QUICK_ARGS = {"mlp": ["--task", "xor", "--epochs", "3"]}
UNITS = {"train_examples_per_sec": "examples/s", "tokens_per_sec": "tokens/s", "examples_per_sec": "examples/s"}


def parse_args(argv):
    p = make_parser(__doc__)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two ways, per experiment")
    p.add_argument("--only", default=",".join(RUNS), help=f"comma-separated experiments, of {', '.join(RUNS)}")
    p.add_argument("--quick", action="store_true", help="one tiny run each way: checks the script (see above)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parse_quick(p, argv, QUICK)
    check_positive(p, args, ("rounds",))
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in RUNS]
    if unknown or not args.only:
        p.error(f"--only takes names of {', '.join(RUNS)}, got {','.join(unknown) or 'none'}")
    return args


def _in_memory():
    """The engine's TrainInput with each round's batches read whole before the round starts."""
    from jaxdl.train import input as train_input

    class Preread(train_input.TrainInput):
        def round(self, epoch, skip, count):
            return iter(list(super().round(epoch, skip, count)))
    return Preread


def _speed(name: str, argv: list[str], figure: str, preread: bool, workdir: str) -> float:
    from jaxdl.train import loop
    module = importlib.import_module(f"experiments.{RUNS[name][0]}")
    shipped = loop.TrainInput
    loop.TrainInput = _in_memory() if preread else shipped
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            summary = module.main([*argv, "--workdir", workdir, "--no-tensorboard"])
    finally:
        loop.TrainInput = shipped
    return float(summary[figure])


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax

    print(f"machine: {platform.processor() or platform.machine()}, {available_cpus()} CPUs in use; "
          f"jax {jax.__version__}, python {platform.python_version()}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            module, run_args, figure = RUNS[name]
            run_args = QUICK_ARGS.get(name, run_args) if args.quick else run_args
            speeds = {"pipeline": [], "in memory": []}
            for r in range(args.rounds):
                order = ("pipeline", "in memory") if r % 2 == 0 else ("in memory", "pipeline")
                for way in order:
                    workdir = os.path.join(tmp, f"{name}-{way.replace(' ', '-')}-{r}")
                    speeds[way].append(_speed(name, run_args, figure, way == "in memory", workdir))
            pipeline, memory = statistics.median(speeds["pipeline"]), statistics.median(speeds["in memory"])
            rows[name] = {"command": f"experiments/{module}.py {' '.join(run_args)}", "unit": UNITS[figure],
                          "pipeline": pipeline, "in_memory": memory, "ratio": pipeline / memory}
    print(f"{'experiment':<10} {'pipeline':>12} {'in memory':>12} {'ratio':>6}  unit, command")
    for name, row in rows.items():
        print(f"{name:<10} {row['pipeline']:>12,.0f} {row['in_memory']:>12,.0f} {row['ratio']:>6.2f}  "
              f"{row['unit']}, {row['command']}")
    write_json(args.json, {"rounds": args.rounds, "rows": rows})
    return rows


if __name__ == "__main__":
    cli.run(main)
