"""Transformers: a GPT-style character language model, or an encoder-decoder on a digit task.

    python experiments/transformer.py --arch lm                      # embedded Shakespeare, offline
    python experiments/transformer.py --arch lm --pos rope --norm rms --kv-heads 2
    python experiments/transformer.py --arch lm --tokenizer bpe --vocab-size 1024 --workdir runs/transformer-lm-bpe
    python experiments/transformer.py --arch seq2seq --task reverse  # generated data, offline

lm: the same data, flags and validation loss as experiments/rnn.py (nats and bits per character
over the whole validation split), a sample printed at every evaluation (cached generation; past
the context it slides a window), and the model FLOPs utilisation against this machine's measured
matmul rate. seq2seq: an EncoderDecoder learns `reverse`, `sort` or `add` on digit strings of
--min-len..--max-len; exact match is measured on held-out strings (never trained on) of those
lengths, and separately on longer strings than any it trained on.

Writes --workdir: summary.json, metrics.jsonl, checkpoints/, curves.png (lm: tokenizer.json).
Running the same command again resumes; a larger --steps continues a finished run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdl import runtime  # noqa: E402

runtime.configure(__file__)  # before jax is imported (and where run as a script, with huge pages)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdl import cli  # noqa: E402
from jaxdl.cli import field  # noqa: E402
from jaxdl.data import sequence_tasks  # noqa: E402
from jaxdl.data.sequence_tasks import TASKS  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.models.attention import POSITIONS  # noqa: E402
from jaxdl.models.transformer import NORMS, DecoderLM, EncoderDecoder  # noqa: E402
from jaxdl.train import TrainState, fit, make_optimizer, make_train_step  # noqa: E402
from jaxdl.train.flops import speed_note  # noqa: E402
from jaxdl.train.metrics import device_description, write_summary  # noqa: E402
from jaxdl.train.state import num_params  # noqa: E402
from jaxdl.tasks.run_info import seq2seq_info  # noqa: E402
from jaxdl.tasks.seq2seq import Seq2Seq  # noqa: E402
from jaxdl.train.warm_start import warm_start  # noqa: E402
from jaxdl.tasks.text_lm import TextLMConfig, train_text_lm  # noqa: E402
from jaxdl.train.config import run_name  # noqa: E402

ARCHS = ("lm", "seq2seq")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class Config(TextLMConfig):
    arch: str = field("lm", "lm (decoder-only, on text) | seq2seq (encoder-decoder, on a generated digit task)")
    layers: int = field(4, "transformer blocks (seq2seq: in the encoder and in the decoder each)")
    heads: int = field(4, "attention heads; must divide --d-model")
    kv_heads: int = field(0, "key/value heads (grouped-query attention); 0 = --heads")
    d_model: int = field(128, "model width")
    dropout: float = field(0.2, "dropout after the embeddings and on each block's residual branches")
    pos: str = field("learned", "positions: sinusoidal (the original formula) | learned | rope (rotary)")
    norm: str = field("layer", "layer (LayerNorm) | rms (RMSNorm), before each block's branches")
    tie_embeddings: bool = field(False, "the output layer is the token embedding's transpose")
    scan_layers: bool = field(True, "one nn.scan over the blocks (compile time flat in depth)")
    unroll_layers: int = field(0, "blocks per iteration of that scan; 0 = all (straight-line code: faster on "
                                  "CPU, compile time grows with depth)", resume="free")
    remat: bool = field(False, "recompute each block's activations in the backward pass (saves memory)",
                        resume="free")
    dtype: str = field("float32", "computation dtype: float32 | bfloat16 (params stay float32; for GPU/TPU)")
    attention: str = field("xla", "attention kernel: xla | cudnn (fused, GPU, bfloat16)", resume="free")
    lr: float = field(1e-3, "peak learning rate")
    schedule: str = field("cosine", "learning-rate schedule: constant | cosine (decays to 0 at the end)")
    warmup_steps: int = field(100, "linear warmup from 0 over this many steps")
    steps: int = field(2000, "training steps in all; a larger value continues a finished run", resume="length")
    batch_size: int = field(0, "windows (lm) or examples (seq2seq) per training step; 0 = 16 (lm) or 64 (seq2seq)")
    seq_len: int = field(128, "lm: tokens per training window, the model's context")
    task: str = field("reverse", f"seq2seq: {' | '.join(TASKS)} digit strings")
    min_len: int = field(1, "seq2seq: shortest training string (add: digits per operand)")
    max_len: int = field(12, "seq2seq: longest training (and held-out test) string")
    longer_by: int = field(4, "seq2seq: also test on strings up to this much longer than --max-len")
    test_examples: int = field(1000, "seq2seq: held-out examples (never trained on) per test set")

    def default_workdir(self) -> str:
        if self.arch == "seq2seq":
            return run_name("transformer", "seq2seq", self.changed("task"))
        return run_name("transformer", self.arch, self.changed("dataset"), self.tokenizer_label())

    def __post_init__(self) -> None:
        if self.batch_size == 0:
            self.batch_size = {"lm": 16, "seq2seq": 64}.get(self.arch, 16)
        super().__post_init__()
        choices = {"arch": ARCHS, "pos": POSITIONS, "norm": NORMS, "dtype": tuple(DTYPES), "task": TASKS,
                   "attention": ("xla", "cudnn")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"unknown --{name.replace('_', '-')} {getattr(self, name)!r}: use one of "
                                 f"{', '.join(allowed)}")
        for name in ("layers", "heads", "d_model", "test_examples", "min_len", "longer_by"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name, most in (("layers", 1024), ("d_model", 2 ** 14), ("test_examples", 100_000)):
            if getattr(self, name) > most:
                raise UsageError(f"--{name.replace('_', '-')} must be at most {most:,}, got {getattr(self, name):,}: "
                                 "lower it")
        if self.unroll_layers < 0:
            raise UsageError(f"--unroll-layers must be >= 0 (0 = all), got {self.unroll_layers}")
        if self.min_len > self.max_len:
            raise UsageError(f"--min-len {self.min_len} is greater than --max-len {self.max_len}: lower --min-len "
                             "or raise --max-len")
        if self.max_len + self.longer_by > 4096:
            raise UsageError(f"--max-len + --longer-by must be at most 4,096 digits, got {self.max_len:,} + "
                             f"{self.longer_by:,}: lower them")
        if self.d_model % self.heads:
            raise UsageError(f"--heads {self.heads} does not divide --d-model {self.d_model}: pick a divisor")
        if self.kv_heads < 0 or (self.kv_heads and self.heads % self.kv_heads):
            raise UsageError(f"--kv-heads {self.kv_heads} must divide --heads {self.heads} (0 = as many)")
        if self.pos == "rope" and (self.d_model // self.heads) % 2:
            raise UsageError(f"--pos rope needs an even head width, got --d-model / --heads = {self.d_model // self.heads}")

    def model_fields(self) -> dict:
        """What the lm and the encoder-decoder share."""
        return dict(d_model=self.d_model, num_heads=self.heads, num_kv_heads=self.kv_heads or None,
                    dropout=self.dropout, pos=self.pos, norm=self.norm, scan=self.scan_layers, remat=self.remat,
                    unroll=self.unroll_layers or self.layers,
                    dtype=DTYPES[self.dtype], implementation=self.attention, tie_embeddings=self.tie_embeddings)


def train_seq2seq(cfg: Config) -> dict:
    """The encoder-decoder on a generated digit task: exact match on held-out and on longer strings."""
    t0 = time.perf_counter()
    test = sequence_tasks.held_out(cfg.task, cfg.test_examples, cfg.min_len, cfg.max_len, cfg.seed)
    longer = sequence_tasks.longer_test(cfg.task, cfg.test_examples, cfg.max_len, cfg.longer_by, cfg.seed)
    longest = max(sequence_tasks.max_source_len(cfg.task, cfg.max_len + cfg.longer_by),
                  sequence_tasks.max_target_len(cfg.task, cfg.max_len + cfg.longer_by) + 1)
    model = EncoderDecoder(sequence_tasks.VOCAB_SIZE, encoder_layers=cfg.layers, decoder_layers=cfg.layers,
                           max_len=longest, **cfg.model_fields())
    task = Seq2Seq(model, sequence_tasks.BOS, sequence_tasks.EOS)
    batches = sequence_tasks.sequence_batches(cfg.task, cfg.batch_size, cfg.min_len, cfg.max_len, cfg.seed,
                                              exclude=test.sources)
    params = task.init(jax.random.key(cfg.seed), batches[0])
    info = seq2seq_info(model, params, cfg.task, sequence_tasks.CHARS, sequence_tasks.PAD, sequence_tasks.BOS,
                        sequence_tasks.EOS, sequence_tasks.max_target_len(cfg.task, cfg.max_len + cfg.longer_by) + 1)
    params = warm_start(cfg.warm_start_from(), params, info)
    print(f"{cfg.task}: digit strings of {cfg.min_len}-{cfg.max_len}, {len(test.sources)} held out, device "
          f"{device_description()}\nencoder-decoder: {cfg.layers} + {cfg.layers} layers, {cfg.heads} heads, width "
          f"{cfg.d_model}, {cfg.pos} positions, {num_params(params):,} parameters")
    n_longer = longer.batch["source_lengths"]  # the task's length n: digits per operand for add
    n_longer = (n_longer - 1) // 2 if cfg.task == "add" else n_longer

    def evaluate(params) -> dict:
        m = task.evaluate(params, test.batch)
        far = task.evaluate(params, longer.batch)
        for src, out, ok in list(zip(test.batch["source"], m["outputs"]["tokens"], m["outputs"]["exact"]))[:3]:
            text = sequence_tasks.decode(src)
            print(f"  {text} -> {sequence_tasks.decode(out)}"
                  + ("" if ok else f"  (want {sequence_tasks.target_for(cfg.task, text)})"))
        by_length = {int(n): float(far["outputs"]["exact"][n_longer == n].mean()) for n in np.unique(n_longer)}
        print("  longer than trained on, exact match by length: "
              + ", ".join(f"{n}: {v:.1%}" for n, v in by_length.items()))
        return {**m, "longer_exact_match": far["exact_match"], "outputs": {"longer_by_length": by_length}}

    optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay, momentum=cfg.momentum, schedule=cfg.schedule,
                               warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, clip_norm=cfg.clip_norm)
    state = TrainState.create(params, optimizer, cfg.seed)
    result = fit(state, make_train_step(task.loss, optimizer), batches, cfg.eval_every, evaluate, cfg,
                 total_steps=cfg.steps, describe=info)
    m = result.eval_metrics
    summary = {"exact_match": m["exact_match"], "token_accuracy": m["token_accuracy"], "val_loss": m["loss"],
               "longer_exact_match": m["longer_exact_match"], "longer_exact_match_by_length": m["outputs"]["longer_by_length"],
               "task": cfg.task, "train_lengths": [cfg.min_len, cfg.max_len],
               "examples_per_sec": result.train_examples_per_sec, "compile_seconds": result.compile_seconds,
               "model_flops_per_example": result.flops_per_example, "mfu": result.mfu,
               "matmul_peak_gflops": result.matmul_peak_gflops,
               "num_params": num_params(params), "steps": result.steps, "dataset": f"generated:{cfg.task}",
               "device": device_description(), "wall_seconds": time.perf_counter() - t0}
    print(f"summary: {write_summary(cfg.workdir, summary)}"
          f"{speed_note(result.train_examples_per_sec, 'examples', result.mfu)}")
    return summary


def main(argv=None) -> dict:
    cfg = cli.parse(Config, argv, __doc__)
    if cfg.arch == "seq2seq":
        return train_seq2seq(cfg)
    build = lambda vocab: DecoderLM(vocab, num_layers=cfg.layers, max_len=cfg.seq_len, **cfg.model_fields())
    describe = lambda params: (f"decoder-only transformer: {cfg.layers} layers, {cfg.heads} heads"
                               f"{f' ({cfg.kv_heads} key/value)' if cfg.kv_heads else ''}, width {cfg.d_model}, "
                               f"context {cfg.seq_len}, {cfg.pos} positions, {cfg.norm} norm, {cfg.dtype}")
    return train_text_lm(cfg, build, describe)  # its summary has the engine's counted model FLOPs and mfu


if __name__ == "__main__":
    cli.run(main)
