"""The `jaxdl` command: use what a run trained. One subcommand per use, each with --help.

    jaxdl info WORKDIR                          what the run is: family, model, data, steps, metrics
    jaxdl predict WORKDIR IMAGE...              top classes of image files (--json: one object a line)
    jaxdl generate WORKDIR --prompt TEXT        continue text with a language model
    jaxdl transduce WORKDIR SOURCE...           an encoder-decoder's greedy outputs
    jaxdl sample WORKDIR --prompt TEXT          draw images from a text-to-image diffusion run
    jaxdl export WORKDIR --out FILE             the forward pass as a jax.export artifact
    jaxdl convert --from KIND SRC --out WORKDIR PyTorch weights (MY_NET, char LMs, GPT-2) -> a jaxdl run
    jaxdl convert --to torch WORKDIR --out FILE a jaxdl run -> safetensors for PyTorch
    jaxdl train FAMILY [FLAGS]                  run experiments/FAMILY.py (cnn, mlp, rnn, transformer, diffusion)

A thin layer over `jaxdl.load`. Bad input ends with one line on stderr and exit status 2, and
never changes the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from typing import Sequence

from jaxdl import runtime
from jaxdl.allocator import relaunch_with_huge_pages
from jaxdl.cli import _OneLineParser, run
from jaxdl.errors import UsageError

EXPERIMENTS = ("cnn", "mlp", "rnn", "transformer", "diffusion")


def _start_jax() -> None:
    """XLA flags before jax is imported; compiled programs cached on disk, so the second `jaxdl
    predict` on a run skips compilation (JAXDL_CACHE names the folder; empty turns it off)."""
    runtime.configure()
    import jax

    cache = os.environ.get("JAXDL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxdl", "xla"))
    if cache and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _load(args: argparse.Namespace, family: str | tuple[str, ...], use: str):
    _start_jax()
    import jaxdl

    trained = jaxdl.load(args.workdir, _checkpoint(args.checkpoint))
    families = (family,) if isinstance(family, str) else family
    if trained.family not in families:
        raise UsageError(f"{use} is for {_families(families)} runs; {args.workdir} "
                         f"is a {trained.family.replace('_', ' ')} run (see jaxdl info {args.workdir})")
    return trained


def _families(families: tuple[str, ...]) -> str:
    names = [f.replace("_", " ") for f in families]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _checkpoint(text: str) -> str | int:
    if text in ("best", "latest"):
        return text
    if text.isdigit():
        return int(text)
    raise UsageError(f"--checkpoint must be best, latest or a step number, got {text!r}")


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} cannot be read ({type(e).__name__})") from None


def _checkpoint_steps(directory: str) -> list[int]:
    if "://" in directory:  # a bucket: through etils (no jax needed)
        from etils import epath

        path = epath.Path(directory)
        return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []
    return sorted(int(s) for s in os.listdir(directory) if s.isdigit()) if os.path.isdir(directory) else []


def info(args: argparse.Namespace) -> None:
    """Reads only JSON files: no jax, instant."""
    model = _read_json(os.path.join(args.workdir, "model.json"))
    if model is None:
        raise UsageError(f"{args.workdir} has no model.json: not a trained jaxdl run")
    summary = _read_json(os.path.join(args.workdir, "summary.json")) or {}
    ckpt_dir = (model.get("checkpoints") or {}).get("directory") or os.path.join(args.workdir, "checkpoints")
    steps = _checkpoint_steps(ckpt_dir)
    if args.json:
        print(json.dumps({"model": model, "summary": summary, "checkpoints": steps}))
        return
    try:
        _print_info(args.workdir, model, summary, steps)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise UsageError(f"{args.workdir}/model.json is damaged: restore it or retrain") from None


def _print_info(workdir: str, model: dict, summary: dict, steps: list[int]) -> None:
    fields = ", ".join(f"{k}={v}" for k, v in model["model"]["fields"].items())
    print(f"{workdir}: {model['family'].replace('_', ' ')}, {model['model']['class']}({fields})")
    print(f"  parameters  {model['num_params']:,}" + (f" x {model['members']} models" if model.get("members", 1) > 1 else ""))
    print(f"  dataset     {model['dataset']}")
    print(f"  steps       {summary.get('steps', steps[-1] if steps else 0)}"
          + (f" (checkpoints at {', '.join(map(str, steps))})" if steps else " (no checkpoint yet)"))
    for key, value in summary.items():
        if key.startswith(("test_", "val_", "sample_accuracy", "frechet", "exact_match", "token_accuracy")) and \
                isinstance(value, (int, float)):
            print(f"  {key:<11} {value:.6g}")


def predict(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    model = _load(args, "classifier", "jaxdl predict")
    probs = model.predict_files(args.images, args.invert, args.crop)
    names = model.class_names
    for path, p in zip(args.images, probs):
        best = [int(i) for i in p.argsort()[::-1][:args.top_k]]
        if args.json:
            print(json.dumps({"file": path, "class": names[best[0]], "index": best[0],
                              "probabilities": [round(float(x), 6) for x in p]}))
        else:
            print(f"{path}: " + ", ".join(f"{names[i]} ({p[i]:.3f})" for i in best))


def generate(args: argparse.Namespace) -> None:
    model = _load(args, "language_model", "jaxdl generate")
    text = model.generate(args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)
    print(f"{args.prompt}{text}")


def transduce(args: argparse.Namespace) -> None:
    model = _load(args, "seq2seq", "jaxdl transduce")
    for source, out in zip(args.sources, model.transduce(args.sources)):
        print(f"{source} -> {out}")


def sample(args: argparse.Namespace) -> None:
    from jaxdl.data.captions import parse_prompts

    prompts = parse_prompts(args.prompt)
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK) or os.path.isdir(args.out):
        raise UsageError(f"--out {args.out}: cannot write there (no such folder, not writable, or a folder)")
    if not args.out.lower().endswith(".png"):
        raise UsageError(f"--out {args.out}: the grid is a PNG: name it *.png")
    model = _load(args, "diffusion", "jaxdl sample")
    images = model.sample(prompts, args.num, args.guidance, args.steps, args.eta, args.seed, args.sampler)
    from jaxdl import plots

    plots.sample_grid(images, prompts, args.out, max_columns=args.num)
    print(f"{len(prompts)} x {args.num} images: {args.out}")


def export(args: argparse.Namespace) -> None:
    from jaxdl.inference.export import export as write

    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    model = _load(args, ("classifier", "language_model", "vector"), "jaxdl export")
    meta = write(model, args.out, platforms)
    print(f"{args.out} ({meta['family'].replace('_', ' ')}, input {meta['input']['shape']}, platforms "
          f"{', '.join(meta['platforms'])}) and {args.out}.json")


def _floats(flag: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} takes numbers separated by commas, got {text!r}") from None


def convert(args: argparse.Namespace) -> None:
    from jaxdl import convert as conversions

    if args.to is not None:
        if args.to != "torch":
            raise UsageError(f"--to {args.to!r}: jaxdl converts to torch")
        _start_jax()
        print("wrote " + ", ".join(conversions.to_torch(args.source, args.out, _checkpoint(args.checkpoint))))
        return
    kind = getattr(args, "from")
    if kind not in conversions.IMPORTERS:
        raise UsageError(f"unknown --from {kind!r}: use one of {', '.join(conversions.IMPORTERS)}")
    meta = {"classes": args.classes, "mean": args.mean, "std": args.std, "data_size": args.data_size,
            "data_channels": args.data_channels, "chars": args.chars_from}
    flags = {"chars": "--chars-from"}
    unused = [flags.get(k, f"--{k.replace('_', '-')}") for k, v in meta.items()
              if v is not None and k not in conversions.META[kind]]
    if unused:
        raise UsageError(f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} not for --from {kind}")
    meta.update(classes=args.classes.split(",") if args.classes is not None else None,
                mean=_floats("--mean", args.mean), std=_floats("--std", args.std))
    if args.chars_from is not None:
        from jaxdl.data.text import read_text_file

        meta["chars"] = "".join(sorted(set(read_text_file(args.chars_from))))
    _start_jax()
    conversions.from_torch(kind, args.source, args.out, **meta)
    print(f"{args.out}: converted from {args.source} (try: jaxdl info {args.out})")


def train(args: argparse.Namespace, rest: list[str]) -> None:
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments",
                          f"{args.family}.py")
    if not os.path.isfile(script):
        raise UsageError(f"{script} is not there: jaxdl train needs the source checkout (pip install -e .)")
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")


def parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="jaxdl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_OneLineParser, metavar="COMMAND")

    def command(name: str, help: str, workdir: bool = True, checkpoint: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        if workdir:
            c.add_argument("workdir", help="a run's --workdir (it holds model.json and checkpoints/)")
        if workdir and checkpoint:
            c.add_argument("--checkpoint", default="best", help="best (by the run's test metric), latest, or a step")
        return c

    c = command("info", "what a run is: family, model, parameters, dataset, steps, final metrics", checkpoint=False)
    c.add_argument("--json", action="store_true", help="model.json, summary.json and the checkpoint steps as JSON")
    c = command("predict", "classify image files (PNG, JPEG, ...) with an image classifier run")
    c.add_argument("images", nargs="+", help="image files; any size, grey or RGB")
    c.add_argument("--top-k", type=int, default=3, help="classes shown per image (default 3)")
    c.add_argument("--invert", action="store_true", help="dark ink on light paper (digits and MNIST are light on dark)")
    c.add_argument("--crop", action="store_true", help="cut each image to its ink, centred in a square (as digits were)")
    c.add_argument("--json", action="store_true", help="one JSON object a line: file, class, index, probabilities")
    c = command("generate", "continue a prompt with a language-model run")
    c.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    c.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    c.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    c.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest tokens; 0 = all")
    c.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 = all")
    c.add_argument("--seed", type=int, default=0, help="random seed of the draw")
    c = command("transduce", "run an encoder-decoder (seq2seq) run on source strings")
    c.add_argument("sources", nargs="+", help="source strings, e.g. 0123 or 907+310")
    c = command("sample", "draw images from a text-to-image diffusion run")
    c.add_argument("--prompt", required=True, help="prompts separated by '|', e.g. \"a handwritten seven|the digit 3\"")
    c.add_argument("--num", type=int, default=8, help="images per prompt (default 8)")
    c.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight (default 1)")
    c.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    c.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 = DDPM's")
    c.add_argument("--sampler", default="ddim", help="ddim or ddpm (every step)")
    c.add_argument("--seed", type=int, default=0, help="random seed")
    c.add_argument("--out", default="samples.png", help="the grid, one row per prompt (default samples.png)")
    c = command("export", "write the forward pass as a jax.export artifact (+ FILE.json) that needs only jax")
    c.add_argument("--out", required=True, help="the serialized function; its description goes to FILE.json")
    c.add_argument("--platforms", default="cpu,cuda,tpu", help="lower for these (default cpu,cuda,tpu)")
    c = command("convert", "PyTorch weights -> a jaxdl run (--from KIND SRC), or a run -> PyTorch (--to torch WORKDIR)",
                workdir=False)
    way = c.add_mutually_exclusive_group(required=True)
    way.add_argument("--from", metavar="KIND", help="mynet | rnn-lm | lstm-lm | gru-lm | gpt2: what SRC holds")
    way.add_argument("--to", metavar="torch", help="torch: write the run WORKDIR's weights for PyTorch")
    c.add_argument("source", metavar="SRC|WORKDIR", help="--from: a .safetensors/.pt/.pth/.bin file (gpt2: a "
                   "directory with config.json); --to: a run's --workdir")
    c.add_argument("--out", required=True, help="--from: the new workdir; --to: FILE.safetensors (a GPT: a new directory)")
    c.add_argument("--checkpoint", default="best", help="--to: best, latest, or a step")
    c.add_argument("--classes", help="mynet: class names in output order, comma-separated (default 0..K-1)")
    c.add_argument("--mean", help="mynet: the training transform's Normalize mean (one, or one per channel: 0.5,0.5,0.5)")
    c.add_argument("--std", help="mynet: the training transform's Normalize std")
    c.add_argument("--data-size", type=int, help="mynet: the side of the images it was trained on before resizing "
                   "(28 for MNIST; default the input size)")
    c.add_argument("--data-channels", type=int, help="mynet: their channels, 1 (grey) or 3 (default: the input's)")
    c.add_argument("--chars-from", metavar="TEXTFILE", help="char LMs: the training text; the vocabulary is "
                   "sorted(set(text)) (default: a FILE.json beside SRC, else prompts are token ids)")
    c = command("train", "train: runs experiments/FAMILY.py with the flags that follow", workdir=False)
    c.add_argument("family", choices=EXPERIMENTS, help=" | ".join(EXPERIMENTS))
    return p


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)

    def dispatch(argv: Sequence[str] | None) -> None:
        argv = list(argv or [])
        if argv[:1] == ["train"] and len(argv) > 1 and argv[1] not in ("-h", "--help"):
            args, rest = parser().parse_known_args(argv[:2])
            return train(args, argv[2:])
        args = parser().parse_args(argv)
        {"info": info, "predict": predict, "generate": generate, "transduce": transduce, "sample": sample,
         "export": export, "convert": convert}[args.command](args)

    run(dispatch, argv)


def console() -> None:
    """The installed `jaxdl` command: `jaxdl train` started again in place with transparent huge pages
    where that helps (jaxdl/allocator.py; the other subcommands are too short to gain from them, and
    not when `main` is called from Python), then `main`."""
    if sys.argv[1:2] == ["train"]:
        relaunch_with_huge_pages(sys.argv[0])
    main()


if __name__ == "__main__":
    console()
