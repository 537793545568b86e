"""Language models (RNN/LSTM/GRU, the GPT) and encoder-decoders, loaded for use."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.text import tokenizer_from_json
from jaxdl.errors import UsageError
from jaxdl.inference.trained import Trained
from jaxdl.tasks.language_model import LanguageModel as LanguageModelTask
from jaxdl.tasks.seq2seq import Seq2Seq


def sample_key(seed: int) -> jax.Array:
    """The key a training run's printed samples are drawn with, for its --seed."""
    return jax.random.fold_in(jax.random.key(seed), 1)


class LanguageModel(Trained):
    """`generate(prompt, ...)` -> text; `logits(tokens)`; `encode` / `decode` with the run's tokenizer."""

    def example_inputs(self) -> tuple:
        return (jnp.zeros((1, 1), jnp.int32),)

    @functools.cached_property
    def tokenizer(self):
        return tokenizer_from_json(self.info["tokenizer"], self.workdir)

    @functools.cached_property
    def task(self) -> LanguageModelTask:
        return LanguageModelTask(self.model)

    @property
    def context(self) -> int | None:
        """The longest sequence one forward pass takes (a transformer's), or None (recurrent)."""
        return self.info["language_model"]["context"]

    def encode(self, text: str) -> np.ndarray:
        try:
            return self.tokenizer.encode(text)
        except UsageError as e:
            if self.tokenizer.kind != "char":  # the other kinds' messages say what they accept
                raise
            raise UsageError(f"{str(e)}: this model knows only the characters of its training text") from None

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(ids)

    @functools.cached_property
    def _logits_fn(self):
        return jax.jit(lambda params, tokens_BT: self.model.apply(params, tokens_BT)[0])

    def logits(self, tokens: Any) -> np.ndarray:
        """Next-token logits (B, T, V) for token ids (T,) or (B, T), each sequence from a fresh state."""
        tokens_BT = np.asarray(tokens, np.int32)
        tokens_BT = tokens_BT[None] if tokens_BT.ndim == 1 else tokens_BT
        V = self.info["model"]["fields"]["vocab_size"]
        if tokens_BT.ndim != 2 or tokens_BT.shape[1] < 1:
            raise UsageError(f"tokens must be (T,) or (B, T) ids, got shape {np.shape(tokens)}")
        if tokens_BT.min() < 0 or tokens_BT.max() >= V:
            raise UsageError(f"token ids must be in 0..{V - 1}, got {tokens_BT.min()}..{tokens_BT.max()}")
        if self.context is not None and tokens_BT.shape[1] > self.context:
            raise UsageError(f"{tokens_BT.shape[1]} tokens exceed the model's context of {self.context}: split them")
        return np.asarray(self._logits_fn(self.params, jnp.asarray(tokens_BT)))

    def generate(self, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0) -> str:
        """The prompt's continuation (text after the prompt): temperature 0 is greedy; top-k and top-p
        (nucleus) restrict the draw. An empty prompt starts where the run's samples did (a newline)."""
        if max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not temperature >= 0 or not 0 < top_p <= 1 or top_k < 0:
            raise UsageError(f"need temperature >= 0, 0 < top_p <= 1 and top_k >= 0; got {temperature}, {top_p}, {top_k}")
        top_k = min(top_k, self.tokenizer.vocab_size)
        ids = self.encode(prompt or self.info["language_model"]["default_prompt"])
        if len(ids) == 0:
            raise UsageError("the prompt encodes to no tokens: give some text")
        if self.context is not None and len(ids) > self.context:
            raise UsageError(f"the prompt is {len(ids)} tokens, longer than the model's context of {self.context}")
        out = self.task.generate(self.params, ids[None], sample_key(seed), max_new_tokens, temperature, top_k,
                                 top_p=top_p)
        return self.continuation(ids, out[0])

    def continuation(self, prompt_ids: Any, new_ids: Any) -> str:
        """The text `new_ids` add after the prompt: decoded together with it, so what joins them (the
        space between ids, a word piece's missing space, a character split over bytes) comes out as
        the whole sequence would read, less the prompt's own text."""
        head = self.decode(prompt_ids)
        whole = self.decode(np.concatenate([np.asarray(prompt_ids), np.asarray(new_ids)]))
        return whole[len(head):] if whole.startswith(head) else self.decode(new_ids)


class Seq2SeqModel(Trained):
    """`transduce(sources)` -> outputs: greedy decoding with the key/value cache."""

    @property
    def _spec(self) -> dict:
        return self.info["seq2seq"]

    def example_inputs(self) -> tuple:
        return (jnp.zeros((1, self.model.max_len), jnp.int32), jnp.ones((1,), jnp.int32), jnp.zeros((1, 1), jnp.int32))

    def _encode(self, text: str) -> list[int]:
        chars, first = self._spec["chars"], self._spec["first_char_id"]
        bad = sorted(set(text) - set(chars))
        if bad:
            raise UsageError(f"source {text!r} has characters {''.join(bad)!r} the model does not know (it knows {chars!r})")
        return [first + chars.index(c) for c in text]

    def _decode(self, ids: Sequence[int]) -> str:
        chars, first, eos = self._spec["chars"], self._spec["first_char_id"], self._spec["eos"]
        out = []
        for i in ids:
            if i == eos:
                break
            if first <= i < first + len(chars):
                out.append(chars[i - first])
        return "".join(out)

    def transduce(self, sources: str | Sequence[str]) -> str | list[str]:
        """Each source string's greedy output (a single string in, a single string out)."""
        one = isinstance(sources, str)
        texts = [sources] if one else list(sources)
        if not texts or any(not t for t in texts):
            raise UsageError("give one or more non-empty source strings")
        ids = [self._encode(t) for t in texts]
        width = self.model.max_len
        longest = max(len(i) for i in ids)
        if longest > width:
            raise UsageError(f"a source of {longest} tokens exceeds the model's {width} positions")
        source_BS = np.full((len(ids), width), self._spec["pad"], np.int32)
        for b, row in enumerate(ids):
            source_BS[b, :len(row)] = row
        task = Seq2Seq(self.model, self._spec["bos"], self._spec["eos"])
        out = task.generate(self.params, source_BS, np.array([len(r) for r in ids]), self._spec["max_target_tokens"])
        results = [self._decode(row) for row in out.tolist()]
        return results[0] if one else results
