"""Tokenizers trained on the run's text: byte-level BPE and word-level, with Hugging Face `tokenizers`.

Both are trained on the training split only (the validation text stays unseen, as for the model),
with at most `--vocab-size` tokens, and speak CharTokenizer's interface (kind, vocab_size, encode,
decode, to_json).

    bpe    byte-level BPE (GPT-2's scheme): the 256 byte values, then merges of frequent pairs. Any
           text encodes, and decode(encode(text)) == text exactly.
    word   one token per word, run of whitespace or punctuation mark, the most frequent ones of the
           training text; anything else is the unknown token `[UNK]`, so decode(encode(text)) == text
           whenever the text has no unknown word.

Training is deterministic (the same text and size give the same tokenizer, in every process), and
the trained tokenizer travels inside the run's tokenizer entry (tokenizer.json and model.json's
"tokenizer"), as the `tokenizers` library's own JSON, so a workdir needs no other file and a
resumed or fine-tuned run encodes with exactly the vocabulary its weights were trained on:

    {"kind": "bpe" | "word", "vocab_size": V, "huggingface": {... Tokenizer.to_str(), parsed ...}}
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from jaxdl.errors import UsageError

KINDS = ("bpe", "word")
VOCAB_SIZE = 512  # --vocab-size's default
MIN_VOCAB_SIZE = {"bpe": 257, "word": 2}  # bpe: its 256-byte alphabet and a merge; word: [UNK] and a word
MAX_VOCAB_SIZE = 2 ** 20  # beyond any text's useful vocabulary; the embedding would not fit
UNKNOWN = "[UNK]"
WORD_PIECES = r"\w+|\s+|[^\w\s]"  # a word, a run of whitespace, or one punctuation mark


def check_vocab_size(kind: str, vocab_size: int) -> None:
    """A UsageError unless `vocab_size` suits a trained tokenizer of `kind`."""
    least = MIN_VOCAB_SIZE[kind]
    if vocab_size < least:
        why = "its 256 byte values and at least one merge" if kind == "bpe" else "the unknown token and a word"
        raise UsageError(f"--vocab-size must be >= {least} for --tokenizer {kind} ({why}), got {vocab_size}")
    if vocab_size > MAX_VOCAB_SIZE:
        raise UsageError(f"--vocab-size must be at most {MAX_VOCAB_SIZE:,}, got {vocab_size:,}: lower it")


class TrainedTokenizer:
    """A `tokenizers.Tokenizer` trained here, with the JSON entry it is saved as."""

    kind = ""

    def __init__(self, tokenizer: Any, entry: dict | None = None):
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        # A loaded tokenizer keeps the entry it was read from: a newer `tokenizers` may serialise the
        # same vocabulary differently, and save_tokenizer compares entries to refuse another vocabulary.
        self._entry = entry or {"kind": self.kind, "vocab_size": self.vocab_size,
                                "huggingface": json.loads(tokenizer.to_str())}

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tokenizer.encode(text).ids, np.int32)

    def decode(self, ids) -> str:
        return self._tokenizer.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

    def to_json(self) -> dict:
        return self._entry


class BPETokenizer(TrainedTokenizer):
    kind = "bpe"

    @classmethod
    def train(cls, text: str, vocab_size: int = VOCAB_SIZE) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # " the" and "the" differ
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.train_from_iterator([text], trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, seen or not
            special_tokens=[], show_progress=False))
        return cls(tokenizer)


class WordTokenizer(TrainedTokenizer):
    kind = "word"

    @property
    def unknown_id(self) -> int:
        return self._tokenizer.token_to_id(UNKNOWN)

    @classmethod
    def train(cls, text: str, vocab_size: int = VOCAB_SIZE) -> WordTokenizer:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.WordLevel(unk_token=UNKNOWN))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PIECES), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()  # the pieces hold their own spaces: decoding concatenates
        tokenizer.train_from_iterator([text], trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=[UNKNOWN], show_progress=False))
        return cls(tokenizer)


def train_tokenizer(kind: str, text: str, vocab_size: int = VOCAB_SIZE) -> TrainedTokenizer:
    check_vocab_size(kind, vocab_size)
    return {"bpe": BPETokenizer, "word": WordTokenizer}[kind].train(text, vocab_size)


def trained_tokenizer_from_json(d: dict) -> TrainedTokenizer:
    """The tokenizer a tokenizer entry ({"kind": "bpe" | "word", ...}) holds."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UsageError(f"a {d['kind']} tokenizer needs the tokenizers package (pip install tokenizers)") from None
    try:
        tokenizer = Tokenizer.from_str(json.dumps(d["huggingface"]))
    except Exception as e:  # a missing key, or the bare Exception tokenizers raises for JSON it cannot read
        first = (str(e).strip() or type(e).__name__).splitlines()[0][:160]
        raise UsageError(f"the saved {d['kind']} tokenizer cannot be read ({first})") from None
    return {"bpe": BPETokenizer, "word": WordTokenizer}[d["kind"]](tokenizer, d)
