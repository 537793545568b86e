"""A character language model with an RNN, LSTM or GRU, and text generated from a prompt.

    python experiments/rnn.py --cell lstm                     # embedded Shakespeare, offline
    python experiments/rnn.py --cell gru --dataset text:book.txt
    python experiments/rnn.py --dataset tiny_shakespeare      # TFDS (downloads once)

Evaluates every --eval-every steps (validation loss in nats and bits per character) and prints a
sample. Writes --workdir: summary.json, metrics.jsonl, checkpoints/, tokenizer.json, curves.png.
Running the same command again resumes; a larger --steps continues a finished run.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdl import runtime  # noqa: E402

runtime.configure_xla()  # before jax is imported

import jax  # noqa: E402

from jaxdl import cli  # noqa: E402
from jaxdl.cli import field, fixed  # noqa: E402
from jaxdl.data.text import EMBEDDED, check_seq_len, default_prompt, eval_windows, load_text, save_tokenizer, window_batches  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.models.recurrent import CELLS, RecurrentLM  # noqa: E402
from jaxdl.tasks.language_model import LanguageModel  # noqa: E402
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step  # noqa: E402
from jaxdl.train.metrics import device_description, write_summary  # noqa: E402
from jaxdl.train.state import num_params  # noqa: E402


@dataclasses.dataclass
class Config(TrainConfig):
    cell: str = field("lstm", "rnn (tanh) | lstm | gru")
    layers: int = field(2, "stacked recurrent layers")
    hidden: int = field(256, "hidden units per layer")
    embed: int = field(64, "token embedding width")
    dropout: float = field(0.3, "dropout on embeddings, between layers and before the output layer")
    seq_len: int = field(128, "tokens per training window (backpropagation through time)")
    steps: int = field(1000, "training steps in all; a larger value continues a finished run")
    eval_every: int = field(250, "evaluate, print a sample and checkpoint every N steps")
    dataset: str = field(EMBEDDED, f"{EMBEDDED} (embedded, offline) | text:PATH | tiny_shakespeare | tfds:NAME")
    data_dir: str = field("", "TFDS data directory (default: TFDS's own)")
    tokenizer: str = field("char", "char (one id per character of the text) | byte (UTF-8 bytes, 256 ids)")
    prompt: str = field("", "text the samples continue; empty = a newline (the text's first character if it has none)")
    sample_length: int = field(300, "tokens generated after the prompt")
    temperature: float = field(0.8, "sampling temperature; 0 = greedy")
    top_k: int = field(0, "sample from the k most likely tokens only; 0 = all")
    unroll: int = field(1, "time steps per scan iteration (larger can be faster, compiles slower)")
    batch_size: int = field(32, "windows per training step")
    lr: float = field(2e-3, "peak learning rate")
    weight_decay: float = field(0.0, "L2 for adam/sgd/rmsprop, decoupled decay for adamw")
    clip_norm: float = field(1.0, "clip gradients to this global norm; 0 = off")
    workdir: str = field("runs/rnn", "where checkpoints, metrics and pictures go; rerun to resume")
    epochs: int = fixed(1)  # counted in --steps: random windows have no epochs

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cell not in CELLS:
            raise UsageError(f"unknown --cell {self.cell!r}: use one of {', '.join(CELLS)}")
        for name in ("layers", "hidden", "embed", "steps", "eval_every", "sample_length", "unroll"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not self.temperature >= 0:
            raise UsageError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"--top-k must be >= 0 (0 = no limit), got {self.top_k}")


def main(argv=None) -> dict:
    cfg = cli.parse(Config, argv, __doc__)
    t0 = time.perf_counter()
    data = load_text(cfg.dataset, cfg.tokenizer, cfg.data_dir or None)
    check_seq_len(data, cfg.seq_len)
    prompt = cfg.prompt or default_prompt(data)
    try:  # checked before anything is written
        prompt_ids = data.tokenizer.encode(prompt)[None]
    except UsageError as e:
        raise UsageError(f"--prompt {prompt!r}: {e}") from None
    if cfg.top_k > data.tokenizer.vocab_size:
        raise UsageError(f"--top-k {cfg.top_k} exceeds the vocabulary ({data.tokenizer.vocab_size} tokens)")
    print(f"{data.name}: {len(data.train):,} train / {len(data.valid):,} validation tokens, "
          f"vocabulary {data.tokenizer.vocab_size} ({cfg.tokenizer}); device {device_description()}")
    model = RecurrentLM(data.tokenizer.vocab_size, cfg.cell, cfg.embed, cfg.hidden, cfg.layers, cfg.dropout, cfg.unroll)
    task = LanguageModel(model)
    optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay, momentum=cfg.momentum, schedule=cfg.schedule,
                               warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, clip_norm=cfg.clip_norm)
    batches = functools.partial(window_batches, data.train, cfg.batch_size, cfg.seq_len, cfg.seed, cfg.eval_every)
    params = task.init(jax.random.key(cfg.seed), next(batches(0)))
    print(f"{cfg.cell} language model: {cfg.layers} x {cfg.hidden} hidden, embed {cfg.embed}, "
          f"{num_params(params):,} parameters")
    sample_key = jax.random.fold_in(jax.random.key(cfg.seed), 1)

    def sample(params) -> str:
        ids = task.generate(params, prompt_ids, sample_key, cfg.sample_length, cfg.temperature, cfg.top_k)
        return prompt + data.tokenizer.decode(ids[0])

    def evaluate(params) -> dict:
        metrics = task.evaluate(params, eval_windows(data.valid, cfg.seq_len, cfg.batch_size), data.tokens_per_char)
        text = sample(params)
        print(f"--- sample ---\n{text}\n--------------", flush=True)
        return {**metrics, "outputs": {"sample": text}}

    save_tokenizer(data.tokenizer, cfg.workdir)
    state = TrainState.create(params, optimizer, cfg.seed)
    result = fit(state, make_train_step(task.loss, optimizer), batches, cfg.eval_every, evaluate, cfg,
                 identity={"dataset": data.name, "seq_len": cfg.seq_len}, total_steps=cfg.steps)
    m = result.eval_metrics
    tokens_per_sec = None if result.train_examples_per_sec is None else result.train_examples_per_sec * cfg.seq_len
    summary = {
        "val_loss": m["loss"], "val_bpc": m["bpc"], "val_perplexity": m["perplexity"], "val_accuracy": m["accuracy"],
        "tokens_per_sec": tokens_per_sec, "compile_seconds": result.compile_seconds,
        "num_params": num_params(params), "sample": m["outputs"]["sample"], "steps": result.steps,
        "dataset": data.name, "device": device_description(), "wall_seconds": time.perf_counter() - t0,
    }
    print(f"summary: {write_summary(cfg.workdir, summary)}")
    return summary


if __name__ == "__main__":
    cli.run(main)
