"""Text for language models: specs, tokenizers, a contiguous split, training and validation windows.

Specs (the same strings everywhere):
    shakespeare          the embedded corpus (160,000 characters of Shakespeare), offline default
    text:PATH            any UTF-8 text file
    tiny_shakespeare     a TFDS text dataset (also tfds:NAME); its own train/validation splits

A text file or the embedded corpus is split contiguously: the first 90% trains, the last 10%
validates. The character vocabulary is built from the whole text; the trained tokenizers (bpe,
word: jaxdl.data.subword) from the training split only. Either is saved with the run
(`tokenizer.json`) so a checkpoint is always read with the vocabulary it was trained with.
"""

from __future__ import annotations

import dataclasses
import json
import os
from importlib import resources
from typing import Iterator

import grain
import numpy as np

from jaxdl.errors import UsageError
from jaxdl.data.batches import ENDLESS, positions
from jaxdl.data.subword import KINDS, VOCAB_SIZE, TrainedTokenizer, train_tokenizer, trained_tokenizer_from_json
from jaxdl.runtime import is_primary, local_share

EMBEDDED = "shakespeare"
TOKENIZERS = ("char", "byte", *KINDS)
TRAIN_FRACTION = 0.9


class CharTokenizer:
    """One id per distinct character of the training text, in code-point order."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self._index = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self._index.keys())
        if unknown:
            raise UsageError(f"text has characters not in the model's vocabulary: {''.join(unknown)!r}")
        return np.fromiter((self._index[c] for c in text), np.int32, len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_json(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


class ByteTokenizer:
    """The 256 byte values of the UTF-8 encoding: no vocabulary to build, any text encodes."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(np.asarray(ids, np.uint8).reshape(-1).tolist()).decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        return {"kind": self.kind}


Tokenizer = CharTokenizer | ByteTokenizer | TrainedTokenizer


def tokenizer_from_json(d: dict, workdir: str | None = None) -> Tokenizer:
    """The tokenizer model.json's "tokenizer" entry describes. Converted models' kinds ("huggingface",
    "ids": jaxdl.data.pretrained_tokenizers) are not trained with; a huggingface file lives in `workdir`."""
    if d["kind"] in ("huggingface", "ids"):
        from jaxdl.data.pretrained_tokenizers import pretrained_tokenizer_from_json

        return pretrained_tokenizer_from_json(d, workdir)
    if d["kind"] in KINDS:
        return trained_tokenizer_from_json(d)
    return CharTokenizer(d["chars"]) if d["kind"] == "char" else ByteTokenizer()


def save_tokenizer(tokenizer: Tokenizer, workdir: str) -> None:
    """Write `workdir/tokenizer.json`, or check that the one already there is the same."""
    path = os.path.join(workdir, "tokenizer.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved != tokenizer.to_json():
            raise UsageError(f"--workdir {workdir} was trained with another vocabulary ({path}): "
                             "use the same --dataset and --tokenizer, or a new --workdir")
        return
    if not is_primary():
        return
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(tokenizer.to_json(), f)
    os.replace(path + ".tmp", path)


def load_tokenizer(workdir: str) -> Tokenizer:
    with open(os.path.join(workdir, "tokenizer.json")) as f:
        return tokenizer_from_json(json.load(f))


@dataclasses.dataclass
class TextData:
    name: str
    tokenizer: Tokenizer
    train: np.ndarray  # int32 token ids
    valid: np.ndarray
    valid_chars: int  # characters in the validation text

    @property
    def tokens_per_char(self) -> float:
        """Validation tokens per character: 1 for characters, about 1.0-1.5 for UTF-8 bytes, below 1
        for bpe and word (so bits per character = nats per token x this / ln 2 compares them all)."""
        return len(self.valid) / self.valid_chars


def embedded_text() -> str:
    return resources.files("jaxdl.data").joinpath("corpus/tiny_shakespeare.txt").read_text("utf-8")


def read_text_file(path: str) -> str:
    if not os.path.isfile(path):
        raise UsageError(f"text:{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"text:{path} is not UTF-8 text (byte {e.start} is {raw[e.start:e.start + 1]!r}): "
                         "convert it, e.g. `iconv -t utf-8`") from None
    if not text.strip():
        raise UsageError(f"text:{path} is empty: a language model needs text to learn from")
    return text


def _tfds_text(name: str, data_dir: str | None) -> tuple[str, str]:
    import tensorflow_datasets as tfds  # imported only for TFDS specs

    def split_text(split: str) -> str:
        source = tfds.data_source(name, split=split, data_dir=data_dir)
        return "".join(ex["text"].decode("utf-8") if isinstance(ex["text"], bytes) else str(ex["text"])
                       for ex in source)

    try:
        train = split_text("train")
        try:
            valid = split_text("validation")
        except (ValueError, KeyError):  # no validation split: hold out the end of train
            cut = int(len(train) * TRAIN_FRACTION)
            train, valid = train[:cut], train[cut:]
    except UsageError:
        raise
    except Exception as e:  # TFDS raises many types for unknown names and missing data
        raise UsageError(f"could not load TFDS text dataset {name!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); offline, use --dataset {EMBEDDED} or text:PATH") from None
    return train, valid


def load_text(spec: str, tokenizer: str = "char", data_dir: str | None = None, vocab_size: int = VOCAB_SIZE,
              saved: dict | None = None) -> TextData:
    """Read a text spec, build the tokenizer (bpe, word: at most `vocab_size` tokens, trained on the
    training split), encode, split. `saved`, a run's tokenizer entry (a run resumed or fine-tuned
    from), is used instead when it is of the same kind and encodes the whole text."""
    if tokenizer not in TOKENIZERS:
        raise UsageError(f"unknown --tokenizer {tokenizer!r}: use one of {', '.join(TOKENIZERS)}")
    if spec == EMBEDDED:
        text = embedded_text()
    elif spec.startswith("text:"):
        text = read_text_file(spec[len("text:"):])
    elif spec.startswith(("folder:",)) or spec == "digits":
        raise UsageError(f"--dataset {spec} is an image dataset: a language model needs {EMBEDDED}, text:PATH or a TFDS text dataset")
    else:
        text = None
    if text is not None:
        cut = int(len(text) * TRAIN_FRACTION)
        train_text, valid_text = text[:cut], text[cut:]
    else:
        train_text, valid_text = _tfds_text(spec.removeprefix("tfds:"), data_dir)
    if saved is not None and saved.get("kind") == tokenizer:
        tok = tokenizer_from_json(saved)
        try:
            return TextData(spec, tok, tok.encode(train_text), tok.encode(valid_text), len(valid_text))
        except UsageError:  # characters it lacks: a new vocabulary
            pass
    if tokenizer in KINDS:
        tok = train_tokenizer(tokenizer, train_text, vocab_size)
    else:
        tok = CharTokenizer(train_text + valid_text) if tokenizer == "char" else ByteTokenizer()
    return TextData(spec, tok, tok.encode(train_text), tok.encode(valid_text), len(valid_text))


def check_seq_len(data: TextData, seq_len: int) -> None:
    """Training windows need seq_len + 1 tokens of train; validation needs at least one full window."""
    if seq_len < 1:
        raise UsageError(f"--seq-len must be >= 1, got {seq_len}")
    if seq_len + 1 > len(data.valid):
        raise UsageError(f"--seq-len {seq_len} is longer than the validation split ({len(data.valid)} tokens "
                         f"of {data.name}): lower --seq-len or use a longer text")
    if seq_len + 1 > len(data.train):
        raise UsageError(f"--seq-len {seq_len} is longer than the training split ({len(data.train)} tokens): lower it")


def default_prompt(data: TextData) -> str:
    """A newline (a new line, a new speaker, a new paragraph), or the text's first character."""
    try:
        ids = data.tokenizer.encode("\n")
    except UsageError:
        ids = None
    known = ids is not None and getattr(data.tokenizer, "unknown_id", -1) not in ids.tolist()
    return "\n" if known else data.tokenizer.decode(data.train[:1])


def window_batches(tokens: np.ndarray, batch_size: int, seq_len: int, seed: int) -> grain.MapDataset:
    """Training batches of windows `(B, seq_len + 1)` as a Grain dataset (step s -> this process's
    rows): every window start once per pass over the text, each pass a new seeded order."""
    offsets, mine, starts = np.arange(seq_len + 1), local_share(batch_size), len(tokens) - seq_len
    return grain.MapDataset.range(ENDLESS).map(lambda s: {
        "tokens": tokens[positions(starts, seed, int(s) * batch_size, batch_size)[mine, None] + offsets]})


def eval_windows(tokens: np.ndarray, seq_len: int, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The whole split as non-overlapping windows of `seq_len` predictions (the last one partial),
    batched; `mask` (B, seq_len) marks the real targets, so every token is predicted exactly once."""
    n = len(tokens) - 1  # predictions: token t+1 from tokens ..t
    windows = -(-n // seq_len)
    padded = np.zeros(windows * seq_len + 1, np.int32)
    padded[:len(tokens)] = tokens
    mask = (np.arange(windows * seq_len) < n).reshape(windows, seq_len)
    idx = np.arange(windows)[:, None] * seq_len + np.arange(seq_len + 1)
    for start in range(0, windows, batch_size):
        rows = np.arange(start, start + batch_size)
        real = rows < windows
        rows = np.where(real, rows, 0)
        yield {"tokens": padded[idx[rows]], "mask": mask[rows] & real[:, None]}
