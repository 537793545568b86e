"""Tokenizers of converted models: a Hugging Face `tokenizers` file, or bare token ids.

Both speak CharTokenizer's interface (kind, vocab_size, encode, decode, to_json). `vocab_size` is
the model's (its embedding rows), which may exceed the tokenizer's own vocabulary; an id the
model has no row for is refused when encoding, so a prompt never indexes past the embedding.

    HuggingFaceTokenizer   {"kind": "huggingface", "file": "tokenizer.hf.json", "vocab_size": V}
    IdsTokenizer           {"kind": "ids", "vocab_size": V}: text is whitespace-separated ids
"""

from __future__ import annotations

import os

import numpy as np

from jaxdl.errors import UsageError

HF_FILE = "tokenizer.hf.json"  # not tokenizer.json: that name holds char/byte vocabularies of trained runs


def read_hf_tokenizer(path: str):
    """A `tokenizers.Tokenizer` from a tokenizer.json file, or a UsageError saying why not."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UsageError(f"{path} is a Hugging Face tokenizer: reading it needs the tokenizers package "
                         "(pip install tokenizers)") from None
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception for unreadable files
        first = (str(e).strip() or type(e).__name__).splitlines()[0][:160]
        raise UsageError(f"{path} is not a Hugging Face tokenizer.json ({first})") from None


class HuggingFaceTokenizer:
    """A `tokenizers` tokenizer (BPE, WordPiece, ...) read from a file in the workdir."""

    kind = "huggingface"

    def __init__(self, path: str, vocab_size: int):
        self.path = path
        self.vocab_size = int(vocab_size)
        self._tokenizer = read_hf_tokenizer(path)

    def encode(self, text: str) -> np.ndarray:
        ids = np.asarray(self._tokenizer.encode(text).ids, np.int32)
        if len(ids) and ids.max() >= self.vocab_size:
            raise UsageError(f"text encodes to token {int(ids.max())}, beyond the model's {self.vocab_size} tokens")
        return ids

    def decode(self, ids) -> str:
        return self._tokenizer.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

    def to_json(self) -> dict:
        return {"kind": self.kind, "file": os.path.basename(self.path), "vocab_size": self.vocab_size}


class IdsTokenizer:
    """No vocabulary, just token ids: "15496 11 995" <-> [15496, 11, 995]. For models converted
    without a tokenizer, so they can still be run and compared token for token."""

    kind = "ids"

    def __init__(self, vocab_size: int):
        self.vocab_size = int(vocab_size)

    def encode(self, text: str) -> np.ndarray:
        words = text.split()
        bad = [w for w in words if not (w.isascii() and w.isdigit())]
        if bad:
            raise UsageError(f"this model reads token ids (whitespace-separated integers 0..{self.vocab_size - 1}), "
                             f"not {bad[0]!r}")
        ids = np.asarray([int(w) for w in words], np.int64)
        if len(ids) and ids.max() >= self.vocab_size:
            raise UsageError(f"token id {int(ids.max())} is out of range: the model has ids 0..{self.vocab_size - 1}")
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in np.asarray(ids).reshape(-1))

    def to_json(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size}


def pretrained_tokenizer_from_json(d: dict, workdir: str | None) -> HuggingFaceTokenizer | IdsTokenizer:
    """The tokenizer a converted run's model.json describes; a huggingface one's file is in `workdir`."""
    if d["kind"] == "ids":
        return IdsTokenizer(d["vocab_size"])
    name = d["file"]
    if workdir is None or os.path.basename(name) != name:  # model.json names a file of the workdir, nothing else
        raise UsageError(f"a huggingface tokenizer needs its workdir and a plain file name there, got {name!r}")
    return HuggingFaceTokenizer(os.path.join(workdir, name), d["vocab_size"])
