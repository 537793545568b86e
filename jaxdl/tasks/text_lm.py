"""Training a language model on text, whatever the network: the flags and the run that
`experiments/rnn.py` and `experiments/transformer.py --arch lm` share.

The same data specs, tokenizers, training windows, validation-loss definition (LanguageModel),
sampling flags and summary keys for every architecture, so their figures compare directly.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import flax.linen as nn
import jax

from jaxdl.cli import field, fixed
from jaxdl.data.subword import KINDS, VOCAB_SIZE
from jaxdl.data.text import (EMBEDDED, TextData, check_seq_len, default_prompt, eval_windows, load_text,
                             save_tokenizer, window_batches)
from jaxdl.errors import UsageError
from jaxdl.train.warm_start import warm_start
from jaxdl.train.description import read_info
from jaxdl.tasks.language_model import LanguageModel
from jaxdl.tasks.run_info import language_model_info
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step, run_config
from jaxdl.train.flops import speed_note
from jaxdl.train.metrics import device_description, write_summary
from jaxdl.train.state import num_params


@dataclasses.dataclass
class TextLMConfig(TrainConfig):
    dropout: float = field(0.3, "dropout rate (see the model for where)")
    seq_len: int = field(128, "tokens per training window (the context a model learns from)")
    steps: int = field(1000, "training steps in all; a larger value continues a finished run", resume="length")
    eval_every: int = field(250, "evaluate, print a sample and checkpoint every N steps")
    dataset: str = field(EMBEDDED, f"{EMBEDDED} (embedded, offline) | text:PATH | tiny_shakespeare | tfds:NAME")
    data_dir: str = field("", "TFDS data directory (default: TFDS's own)", resume="free")
    tokenizer: str = field("char", "char (one id per character of the text) | byte (UTF-8 bytes, 256 ids) | "
                                   "bpe (byte-level BPE) | word (words, spaces, punctuation; [UNK] for the rest)")
    vocab_size: int = field(VOCAB_SIZE, "bpe, word: the most tokens, trained on the training split (char and byte "
                                        "vocabularies come from the text: leave it)")
    prompt: str = field("", "text the samples continue; empty = a newline (the text's first character if it has none)",
                        resume="free")
    sample_length: int = field(300, "tokens generated after the prompt", resume="free")
    temperature: float = field(0.8, "sampling temperature; 0 = greedy", resume="free")
    top_k: int = field(0, "sample from the k most likely tokens only; 0 = all", resume="free")
    top_p: float = field(1.0, "sample from the most likely tokens holding this much probability; 1 = all",
                         resume="free")
    batch_size: int = field(32, "windows per training step")
    lr: float = field(2e-3, "peak learning rate")
    weight_decay: float = field(0.0, "L2 for adam/sgd/rmsprop, decoupled decay for adamw")
    clip_norm: float = field(1.0, "clip gradients to this global norm; 0 = off")
    epochs: int = fixed(1)  # counted in --steps: a run reads windows in passes, not epochs

    def tokenizer_label(self) -> str:
        """The tokenizer in default workdir names: "" for char, "byte", "bpe512", "word2048"."""
        if self.tokenizer in KINDS:
            return f"{self.tokenizer}{self.vocab_size}"
        return self.changed("tokenizer")

    def __post_init__(self) -> None:
        from jaxdl.cli import check_path
        from jaxdl.data.subword import check_vocab_size
        from jaxdl.data.text import TOKENIZERS

        super().__post_init__()
        for name in ("seq_len", "steps", "eval_every", "sample_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not self.temperature >= 0:
            raise UsageError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"--top-k must be >= 0 (0 = no limit), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.sample_length > 2 ** 20:
            raise UsageError(f"--sample-length must be at most {2 ** 20:,} tokens, got {self.sample_length:,}: "
                             "lower it")
        if self.tokenizer not in TOKENIZERS:
            raise UsageError(f"unknown --tokenizer {self.tokenizer!r}: use one of {', '.join(TOKENIZERS)}")
        if self.tokenizer in KINDS:
            check_vocab_size(self.tokenizer, self.vocab_size)
        elif self.vocab_size != VOCAB_SIZE:  # a flag that would do nothing is a mistake worth naming
            raise UsageError(f"--vocab-size is for --tokenizer bpe or word; a {self.tokenizer} vocabulary comes from "
                             f"the text: drop --vocab-size {self.vocab_size}")
        _, colon, path = self.dataset.partition(":")
        if not self.dataset or (colon and not path):
            raise UsageError(f"--dataset {self.dataset!r} names no text: use {EMBEDDED}, text:PATH or a TFDS name")
        check_path("--dataset", path if colon else self.dataset)  # a TFDS name becomes a directory name
        check_path("--data-dir", self.data_dir)


def train_text_lm(cfg: TextLMConfig, build_model: Callable[[int], nn.Module], describe: Callable[[Any], str],
                  extra_summary: Callable[[dict, Any], dict] | None = None) -> dict:
    """Load the text, build `build_model(vocab_size)`, train it with the engine (evaluating and
    printing a sample every --eval-every steps), write summary.json and return the summary.

    describe(params) -> the line printed about the model; extra_summary(summary, params) -> more keys.
    Every bad input raises UsageError before anything is written.
    """
    t0 = time.perf_counter()
    # A resumed run reads its text in its own saved vocabulary (e.g. a fine-tuned run's), a fine-tuning
    # one in that of the run it starts from: trained tokenizers are not trained again.
    if cfg.resuming() and os.path.isfile(os.path.join(cfg.workdir, "model.json")):
        source = cfg.workdir
    else:
        source = cfg.warm_start_from()
    saved = read_info(source).get("tokenizer") if source else None
    data = load_text(cfg.dataset, cfg.tokenizer, cfg.data_dir or None, cfg.vocab_size, saved)
    if cfg.warm_start_from():
        _say_vocabulary(cfg.init_from, saved, data)
    check_seq_len(data, cfg.seq_len)
    prompt = cfg.prompt or default_prompt(data)
    try:
        prompt_ids = data.tokenizer.encode(prompt)[None]
    except UsageError as e:
        raise UsageError(f"--prompt {prompt!r}: {e}") from None
    if cfg.top_k > data.tokenizer.vocab_size:
        raise UsageError(f"--top-k {cfg.top_k} exceeds the vocabulary ({data.tokenizer.vocab_size} tokens)")
    print(f"{data.name}: {len(data.train):,} train / {len(data.valid):,} validation tokens, "
          f"vocabulary {data.tokenizer.vocab_size} ({cfg.tokenizer}{_unknown(data)}); device {device_description()}")
    model = build_model(data.tokenizer.vocab_size)
    context = getattr(model, "max_len", None)
    if context is not None and prompt_ids.shape[1] > context:
        raise UsageError(f"--prompt is {prompt_ids.shape[1]} tokens, longer than the context of {context} "
                         "(--seq-len): shorten it")
    task = LanguageModel(model)
    optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay, momentum=cfg.momentum, schedule=cfg.schedule,
                               warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, clip_norm=cfg.clip_norm)
    batches = window_batches(data.train, cfg.batch_size, cfg.seq_len, cfg.seed)
    params = task.init(jax.random.key(cfg.seed), batches[0])
    info = language_model_info(model, params, data.tokenizer.to_json(), data.name, default_prompt(data))
    params = warm_start(cfg.warm_start_from(), params, info, model=model,
                        init=lambda m: LanguageModel(m).init(jax.random.key(cfg.seed), batches[0]))
    print(f"{describe(params)}, {num_params(params):,} parameters")
    sample_key = jax.random.fold_in(jax.random.key(cfg.seed), 1)

    def sample(params) -> str:
        ids = task.generate(params, prompt_ids, sample_key, cfg.sample_length, cfg.temperature, cfg.top_k,
                            top_p=cfg.top_p)
        return prompt + data.tokenizer.decode(ids[0])

    def evaluate(params) -> dict:
        metrics = task.evaluate(params, eval_windows(data.valid, cfg.seq_len, cfg.batch_size), data.tokens_per_char)
        text = sample(params)
        print(f"--- sample ---\n{text}\n--------------", flush=True)
        return {**metrics, "outputs": {"sample": text}}

    resolved = {"dataset": data.name, "vocab_size": data.tokenizer.vocab_size}
    if cfg.resuming():  # before the tokenizer is written (fit checks again)
        run_config.check(cfg.workdir, cfg, resolved)
    save_tokenizer(data.tokenizer, cfg.workdir)
    state = TrainState.create(params, optimizer, cfg.seed)
    result = fit(state, make_train_step(task.loss, optimizer), batches, cfg.eval_every, evaluate, cfg,
                 resolved=resolved, total_steps=cfg.steps,
                 describe=info)
    m = result.eval_metrics
    tokens_per_sec = None if result.train_examples_per_sec is None else result.train_examples_per_sec * cfg.seq_len
    per_example = result.flops_per_example  # an example is a window of seq_len (+ 1) tokens, seq_len predicted
    summary = {
        "val_loss": m["loss"], "val_bpc": m["bpc"], "val_perplexity": m["perplexity"], "val_accuracy": m["accuracy"],
        "tokens_per_sec": tokens_per_sec, "compile_seconds": result.compile_seconds,
        "model_flops_per_token": None if per_example is None else per_example / cfg.seq_len,
        "model_flops_per_example": per_example, "mfu": result.mfu, "matmul_peak_gflops": result.matmul_peak_gflops,
        "num_params": num_params(params), "sample": m["outputs"]["sample"], "steps": result.steps,
        "dataset": data.name, "device": device_description(),
    }
    summary.update(extra_summary(summary, params) if extra_summary else {})
    summary["wall_seconds"] = time.perf_counter() - t0
    print(f"summary: {write_summary(cfg.workdir, summary)}{speed_note(tokens_per_sec, 'tokens', result.mfu)}")
    return summary


def _say_vocabulary(init_from: str, saved: dict | None, data: TextData) -> None:
    """Fine-tuning: whether the text is read in the vocabulary of the run it starts from (then the
    embeddings and the output layer carry over whole), which it is when that vocabulary holds every
    character of it (bpe and word vocabularies always do)."""
    if saved is None or saved.get("kind") != data.tokenizer.kind or data.tokenizer.kind == "byte":
        return
    if saved == data.tokenizer.to_json():
        print(f"{data.name} in the vocabulary of {init_from} ({data.tokenizer.vocab_size} tokens)")
    else:
        print(f"{data.name} has characters {init_from}'s vocabulary lacks: a new vocabulary (the characters "
              "both know keep their trained rows)")


def _unknown(data: TextData) -> str:
    """A word vocabulary's share of unknown validation tokens: those are predicted as one token, so
    its bits per character leave out what spelling them would cost."""
    unknown = getattr(data.tokenizer, "unknown_id", None)
    return "" if unknown is None else f", {(data.valid == unknown).mean():.1%} of validation tokens unknown"
