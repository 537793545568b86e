"""Captions from class labels, prompt tokens, and the class a prompt names.

Each class gets the same number of phrasings: digits ("a handwritten seven", "the digit 7", "7",
...) or, for named classes (fashion_mnist's "Sandal", a folder's class names), "a sandal",
"a photo of a sandal", "sandal", .... Prompts are tokenized as UTF-8 bytes after a start token;
the start token alone is the empty ("null") prompt that classifier-free guidance needs.
"""

from __future__ import annotations

import re

import numpy as np

from jaxdl.errors import UsageError

PAD, START = 0, 1
VOCAB_SIZE = 258  # pad, start, 256 bytes
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIGIT_TEMPLATES = ("a handwritten {w}", "the digit {d}", "{d}", "{w}", "a {w}", "the number {w}",
                    "a drawing of the digit {w}", "handwritten {d}")
_NAME_TEMPLATES = ("a {n}", "a photo of a {n}", "{n}", "the {n}", "a picture of a {n}", "an image of a {n}",
                   "a {n}, in grey", "one {n}")


def _is_digit_classes(class_names: list[str]) -> bool:
    return all(n.strip() in "0123456789" and len(n.strip()) == 1 for n in class_names)


def captions(class_names: list[str]) -> list[list[str]]:
    """Phrasings per class (the same count for every class); the first is the class's canonical prompt."""
    if _is_digit_classes(class_names):
        return [[t.format(d=n.strip(), w=DIGIT_WORDS[int(n)]) for t in _DIGIT_TEMPLATES] for n in class_names]
    return [[t.format(n=n.strip().lower()) for t in _NAME_TEMPLATES] for n in class_names]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def label_of(prompt: str, class_names: list[str]) -> int:
    """The class a prompt names (a digit or its word; a class name), or -1 if it names none or several."""
    words = _words(prompt)
    if _is_digit_classes(class_names):
        found = {i for i, n in enumerate(class_names) for w in words if w in (n.strip(), DIGIT_WORDS[int(n)])}
        return found.pop() if len(found) == 1 else -1
    joined = " ".join(words)
    spans = {}  # class -> where its name occurs, as whole words
    for i, n in enumerate(class_names):
        name = " ".join(_words(n))
        if name:
            spans[i] = [m.span() for m in re.finditer(rf"\b{re.escape(name)}\b", joined)]
    # a name inside a longer one ("shirt" in "t shirt top") does not count there
    inside = lambda a, b: b[0] <= a[0] and a[1] <= b[1] and a != b
    found = {i for i, ss in spans.items()
             if any(not any(inside(s, o) for j, os_ in spans.items() if j != i for o in os_) for s in ss)}
    return found.pop() if len(found) == 1 else -1


def encode(prompts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompts -> tokens (P, max_len) int32 (start token, UTF-8 bytes + 2, pad 0) and lengths (P,)."""
    tokens = np.full((len(prompts), max_len), PAD, np.int32)
    lengths = np.zeros(len(prompts), np.int32)
    for i, p in enumerate(prompts):
        ids = [START] + [b + 2 for b in p.encode("utf-8")]
        if len(ids) > max_len:
            raise UsageError(f"prompt {p!r} is {len(ids) - 1} bytes; at most {max_len - 1} fit the text encoder: "
                             "shorten it")
        tokens[i, :len(ids)] = ids
        lengths[i] = len(ids)
    return tokens, lengths


def caption_table(class_names: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every class's phrasings encoded: tokens (K, P, max_len), lengths (K, P)."""
    table = captions(class_names)
    longest = max((c for row in table for c in row), key=lambda c: len(c.encode("utf-8")))
    if len(longest.encode("utf-8")) >= max_len:
        raise UsageError(f"the caption {longest!r} is {len(longest.encode('utf-8'))} bytes, more than the text "
                         f"encoder's {max_len - 1}: raise --max-prompt-bytes")
    tokens, lengths = encode([c for row in table for c in row], max_len)
    K, P = len(table), len(table[0])
    return tokens.reshape(K, P, max_len), lengths.reshape(K, P)


def parse_prompts(text: str) -> list[str]:
    """`--prompt "a seven|the digit 3"` -> the prompts, one per `|`; blank entries are refused."""
    prompts = [p.strip() for p in text.split("|")]
    if not prompts or any(not p for p in prompts):
        raise UsageError(f"--prompt {text!r} holds an empty prompt: give one or more prompts separated by '|', "
                         "e.g. --prompt \"a handwritten seven|the digit 3\"")
    return prompts
