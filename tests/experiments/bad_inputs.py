"""The bad-input sweep's cases (used by test_bad_inputs.py): every flag of every experiment given values
of the wrong kind, out of range, empty, non-finite, huge, or holding characters no encoding expects.

Cases are generated from each config's dataclass fields and their type hints, so a field added later
is swept with no edit here. Every case must be refused by `cli.parse` (the parser or the config's
`__post_init__`), unless it is listed below with its reason:
- MAIN: refused by `main()` once the data is known (the dataset, its vocabulary, its length),
  before anything is written or trained;
- ALLOWED: a legitimate value, which `cli.parse` must accept as given;
- PENDING: a check expected to be added by the owners of that code (the test expects the refusal
  and is marked xfail, strict, so it fails as soon as the refusal exists and the entry must move).
"""

from __future__ import annotations

import dataclasses
import importlib
import typing

EXPERIMENTS = ("cnn", "mlp", "rnn", "transformer", "diffusion", "typed_digits", "long_range")
LONG = 100_000  # characters: near the longest argument Linux passes to a program (128 KiB)
SURROGATE = "\udcff"  # what Python puts in sys.argv for a byte the locale cannot decode (0xff)

VALUES: dict[type, dict[str, str]] = {
    int: {"word": "abc", "fraction": "1.5", "empty": "", "nan": "nan", "inf": "inf", "-inf": "-inf",
          "negative": "-1", "zero": "0", "huge": str(10 ** 12), "long": "9" * LONG, "surrogate": SURROGATE,
          "nul": "\x00"},
    # big: large but within float32 (what the settings meet on the device); huge: beyond it
    float: {"word": "abc", "empty": "", "nan": "nan", "inf": "inf", "-inf": "-inf", "negative": "-1", "zero": "0",
            "big": "1e30", "huge": "1e308", "overflow": "1e999", "long": "9" * LONG, "surrogate": SURROGATE,
            "nul": "\x00"},
    bool: {"word": "maybe", "empty": "", "nan": "nan", "number": "2", "long": "y" * LONG, "surrogate": SURROGATE,
           "nul": "\x00"},
    str: {"empty": "", "word": "abc", "unicode": "é€😀", "long": "x" * LONG, "surrogate": SURROGATE,
          "nul": "\x00"},
}

_LONG_RUN = "a long run is the user's to ask for (it checkpoints each round; SIGTERM saves and exits 0)"
_UNWISE = ("legal, if unwise: the run trains, or stops with exit status 3 once its steps stay non-finite "
           "(--max-bad-steps), checkpoints intact")
_ANY_DIR = "any directory name the system accepts"

# (field, kind) -> why the value is legitimate, for every experiment that has the field.
ALLOWED: dict[tuple[str, str], str] = {
    ("epochs", "huge"): _LONG_RUN,
    ("steps", "huge"): _LONG_RUN,
    ("judge_epochs", "huge"): "a long training of the judge, like a long run",
    ("checkpoint_every", "huge"): "checkpoints at round ends only, as 0 does",
    ("keep_checkpoints", "huge"): "keeps every checkpoint",
    ("log_every", "huge"): "the progress bar's figures refresh at round ends only",
    ("lr", "big"): _UNWISE,
    ("weight_decay", "big"): _UNWISE,
    ("lr", "zero"): "a rate of 0 keeps the initial parameters: a baseline",
    ("weight_decay", "zero"): "no weight decay",
    ("momentum", "zero"): "plain SGD",
    ("warmup_steps", "zero"): "no warmup",
    ("clip_norm", "big"): "a norm above any gradient's: nothing is clipped, as with 0",
    ("dp_clip", "big"): "a norm above any example's gradient: nothing is clipped (no noise without --dp-noise)",
    ("max_bad_steps", "zero"): "0 = never stop on non-finite steps (each is still skipped)",
    ("dropout", "zero"): "no dropout",
    ("rotation", "zero"): "no rotation",
    ("brightness", "zero"): "no brightness jitter",
    ("contrast", "zero"): "no contrast jitter",
    ("ema_decay", "zero"): "the average is the latest parameters",
    ("temperature", "big"): "near-uniform sampling: legal, if not useful",
    ("min_snr_gamma", "big"): "a gamma above every SNR weights every step 1, as 0 does",
    ("unroll", "huge"): "at most the whole sequence runs in one loop iteration",
    ("unroll_layers", "zero"): "0 = every layer in one scan iteration (the default)",
    ("unroll_layers", "huge"): "at most every layer is unrolled, as with 0",
    ("workdir", "word"): _ANY_DIR, ("workdir", "unicode"): _ANY_DIR,
    ("checkpoint_dir", "word"): _ANY_DIR, ("checkpoint_dir", "unicode"): _ANY_DIR,
    ("data_dir", "word"): _ANY_DIR + " (read for TFDS datasets only)",
    ("data_dir", "unicode"): _ANY_DIR + " (read for TFDS datasets only)",
    ("out", "word"): _ANY_DIR, ("out", "unicode"): _ANY_DIR,
    ("prompt", "word"): "text to continue or draw",
}

# (experiment, field, kind) -> reason: what holds for one experiment only.
ALLOWED_IN: dict[tuple[str, str, str], str] = {
    ("rnn", "eval_every", "huge"): "one evaluation, at the end (windows are read step by step, none up front)",
    ("transformer", "eval_every", "huge"): "one evaluation, at the end (windows are read step by step, none up front)",
    ("rnn", "prompt", "long"): "a recurrent model reads a prompt of any length, one token at a time",
    ("diffusion", "prompt", "unicode"): "any UTF-8 text that fits --max-prompt-bytes is a prompt",
    ("long_range", "forget_bias", "negative"): "a forget gate biased towards shut at the start: legal, measured",
}

# (experiment, field, kind) -> what decides it in main(): refused there before any training step.
MAIN: dict[tuple[str, str, str], str] = {
    **{(e, "dataset", k): "no TFDS dataset has that name (known only by asking TFDS)"
       for e in ("cnn", "rnn", "transformer", "diffusion") for k in ("word", "unicode")},
    ("rnn", "seq_len", "huge"): "longer than the text",
    ("transformer", "seq_len", "huge"): "longer than the text",
    ("rnn", "top_k", "huge"): "more than the vocabulary",
    ("transformer", "top_k", "huge"): "more than the vocabulary",
    ("rnn", "prompt", "unicode"): "characters the text's vocabulary lacks",
    ("transformer", "prompt", "unicode"): "characters the text's vocabulary lacks",
    ("transformer", "prompt", "long"): "longer than the model's context (--seq-len)",
}

# (experiment, field, kind) -> the check expected, and from whom.
PENDING: dict[tuple[str, str, str], str] = {}

# Checks that need two flags or a value no kind above produces: (experiment, argv, stage, what);
# FILE stands for an existing file the test makes (it must come out unchanged).
EXTRA: list[tuple[str, list[str], str, str]] = [
    ("mlp", ["--hidden", "64,0"], "parse", "a zero width"),
    ("mlp", ["--hidden", str(10 ** 12)], "parse", "a width that cannot be allocated"),
    ("mlp", ["--lrs", "1e-3,inf"], "parse", "a non-finite rate in the sweep"),
    ("mlp", ["--lrs", "1e-3,0"], "parse", "a zero rate in the sweep"),
    ("mlp", ["--ensemble", "2", "--seed", str(2 ** 32 - 1)], "parse", "seeds past 32 bits"),
    ("transformer", ["--min-len", "5", "--max-len", "4"], "parse", "min above max"),
    ("transformer", ["--heads", "3"], "parse", "heads that do not divide the width"),
    ("transformer", ["--max-len", "4090", "--longer-by", "10"], "parse", "strings too long to generate"),
    ("transformer", ["--arch", "seq2seq", "--max-len", "3"], "main", "too short to hold strings out"),
    ("diffusion", ["--prompt", "a seven||a nine"], "parse", "an empty prompt between separators"),
    ("diffusion", ["--sample-steps", "2000"], "parse", "more sampling steps than --timesteps"),
    ("diffusion", ["--channels", "4096", "--levels", "6"], "parse", "a lowest level too wide to allocate"),
    ("cnn", ["--dataset", "folder:"], "parse", "a folder spec with no folder"),
    ("cnn", ["--batch-size", "2000"], "main", "a batch larger than the 1,437 training images"),
    ("rnn", ["--dataset", "text:"], "parse", "a text spec with no file"),
    ("rnn", ["--vocab-size", "256", "--tokenizer", "bpe"], "parse", "a bpe vocabulary with no room for a merge"),
    ("transformer", ["--vocab-size", "1", "--tokenizer", "word"], "parse", "a word vocabulary of the unknown token alone"),
    ("rnn", ["--vocab-size", str(10 ** 12), "--tokenizer", "word"], "parse", "a vocabulary too large to embed"),
    ("rnn", ["--mesh", "data=0"], "parse", "a mesh axis of size 0"),
    ("rnn", ["--coordinator", "host"], "parse", "a coordinator without a port"),
    ("cnn", ["--workdir", "FILE"], "parse", "a workdir that is a file"),
    ("diffusion", ["--checkpoint-dir", "FILE"], "parse", "a checkpoint directory that is a file"),
    ("typed_digits", ["--out", "FILE"], "main", "--out names an existing file"),
]


def config_of(experiment: str):
    return importlib.import_module(f"experiments.{experiment}").Config


def flags(experiment: str) -> list[tuple[dataclasses.Field, type]]:
    """The config's command-line fields with their types."""
    cls = config_of(experiment)
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def _is_default(value: str, f: dataclasses.Field, type_: type) -> bool:
    if type_ is bool or f.default is None:
        return False
    try:
        return type_(value) == f.default
    except ValueError:
        return False


def expectation(experiment: str, f: dataclasses.Field, type_: type, kind: str, value: str) -> tuple[str, str]:
    """(stage, reason): stage is parse (refused by cli.parse), main, allowed or pending."""
    key = (experiment, f.name, kind)
    if key in PENDING:
        return "pending", PENDING[key]
    if key in MAIN:
        return "main", MAIN[key]
    if key in ALLOWED_IN:
        return "allowed", ALLOWED_IN[key]
    if (f.name, kind) in ALLOWED:
        return "allowed", ALLOWED[(f.name, kind)]
    if _is_default(value, f, type_):
        return "allowed", "the field's default"
    if kind == "zero" and "0 =" in f.metadata.get("help", ""):
        return "allowed", f"its help gives 0 a meaning: {f.metadata['help']}"
    return "parse", "refused by the parser or the config's checks"


def cases(experiment: str) -> list[dict]:
    """Every (field, kind) case of one experiment, with its value and expectation."""
    out = []
    for f, type_ in flags(experiment):
        for kind, value in VALUES[type_].items():
            stage, reason = expectation(experiment, f, type_, kind, value)
            out.append({"experiment": experiment, "field": f.name, "flag": "--" + f.name.replace("_", "-"),
                        "type": type_, "kind": kind, "value": value, "stage": stage, "reason": reason})
    return out
