"""A character language model with an RNN, LSTM or GRU, and text generated from a prompt.

    python experiments/rnn.py --cell lstm                     # embedded Shakespeare, offline
    python experiments/rnn.py --cell gru --dataset text:book.txt
    python experiments/rnn.py --dataset tiny_shakespeare      # TFDS (downloads once)
    python experiments/rnn.py --tokenizer bpe --vocab-size 512 --workdir runs/rnn-lstm-bpe512   # subword tokens

Evaluates every --eval-every steps (validation loss in nats and bits per character) and prints a
sample. Writes --workdir: summary.json, metrics.jsonl, checkpoints/, tokenizer.json, curves.png.
Running the same command again resumes; a larger --steps continues a finished run.
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdl import runtime  # noqa: E402

runtime.configure(__file__)  # before jax is imported (and where run as a script, with huge pages)

from jaxdl import cli  # noqa: E402
from jaxdl.cli import field  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.models.recurrent import CELLS, RecurrentLM  # noqa: E402
from jaxdl.tasks.text_lm import TextLMConfig, train_text_lm  # noqa: E402
from jaxdl.train.config import run_name  # noqa: E402


@dataclasses.dataclass
class Config(TextLMConfig):
    cell: str = field("lstm", "rnn (tanh) | lstm | gru")
    layers: int = field(2, "stacked recurrent layers")
    hidden: int = field(256, "hidden units per layer")
    embed: int = field(64, "token embedding width")
    dropout: float = field(0.3, "dropout on embeddings, between layers and before the output layer")
    unroll: int = field(1, "time steps per scan iteration (larger can be faster, compiles slower)", resume="free")

    def default_workdir(self) -> str:
        return run_name("rnn", self.cell, self.changed("dataset"), self.tokenizer_label())

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cell not in CELLS:
            raise UsageError(f"unknown --cell {self.cell!r}: use one of {', '.join(CELLS)}")
        for name in ("layers", "hidden", "embed", "unroll"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name, most in (("layers", 1024), ("hidden", 2 ** 14), ("embed", 2 ** 14)):
            if getattr(self, name) > most:
                raise UsageError(f"--{name} must be at most {most:,}, got {getattr(self, name):,}: lower it")


def main(argv=None) -> dict:
    cfg = cli.parse(Config, argv, __doc__)
    build = lambda vocab: RecurrentLM(vocab, cfg.cell, cfg.embed, cfg.hidden, cfg.layers, cfg.dropout, cfg.unroll)
    describe = lambda params: f"{cfg.cell} language model: {cfg.layers} x {cfg.hidden} hidden, embed {cfg.embed}"
    return train_text_lm(cfg, build, describe)


if __name__ == "__main__":
    cli.run(main)
