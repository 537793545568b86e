"""Character language model, jaxdl against PyTorch in one run: training speed and validation loss.

    python benchmarks/rnn_vs_torch.py [--cell lstm|gru|rnn] [--steps 300] [--rounds 10] [--threads N]
                                      [--batch-size 32] [--seq-len 128] [--embed 64] [--hidden 256]
                                      [--layers 2] [--unroll 1] [--torch-onednn on|off] [--seed 0]
                                      [--quick] [--json PATH]

The model: embedding (64) -> 2 recurrent layers (256 hidden) -> vocabulary logits, on the embedded
Shakespeare corpus with the character tokenizer (`load_text("shakespeare")`).
  jaxdl    RecurrentLM (dropout 0) + LanguageModel.loss, the engine's jitted `make_train_step`
  PyTorch  nn.Embedding -> nn.LSTM/GRU/RNN(batch_first=True) -> nn.Linear (benchmarks/torch_lm.py), eager;
           on x86 its LSTM runs oneDNN's fused LSTM kernel (forward and backward), its GRU and RNN
           its own per-step kernels; --torch-onednn off gives the LSTM those too

Same start, same data, same optimizer: the torch model gets jaxdl's initial weights (checked: both
give the same loss on the first batch, else the script stops), both train on the very same
`window_batches(train, batch, seq, seed)` arrays, with Adam(lr 2e-3, betas 0.9/0.999, eps 1e-8)
after clipping the gradients to global norm 1.0 (`make_optimizer("adam", 2e-3, 0, clip_norm=1)`;
torch.optim.Adam after torch.nn.utils.clip_grad_norm_).

Speed (the harness of benchmarks/lm_harness.py, shared with the other LM benchmark): JAX's
compile (`.lower(...).compile()`) is timed apart, and the first step of each framework
is run apart (unmeasured). The other --steps - 1 steps of both runs are split into --rounds
rounds; each round runs a block of jaxdl steps then the same number of torch steps (which goes first
alternates from round to round), continuing the same two training runs, so machine noise hits both
alike. Each framework's tokens/s is the median over rounds of (steps x batch x seq) / seconds;
the ratio is jaxdl's over torch's.

Quality: after --steps steps, the validation loss of both by one definition: the mean next-token
cross-entropy in nats over the whole validation split, cut into non-overlapping windows of
--seq-len, each from a zero state (`eval_windows`; jaxdl: LanguageModel.evaluate; torch: the masked
sum of cross-entropy over the same batches / the number of masked targets). bpc = that in bits per
character. The two runs start equal but float32 rounding makes them drift apart, so the losses agree
only statistically: the target is |difference| <= 0.03 nats.

--quick checks the script end to end in well under a minute (most of it compiling): embed 8,
1 x 16 hidden, seq 16, batch 8, 6 steps in 2 rounds (any of these given as flags still wins); its
figures measure nothing.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make `benchmarks.torch_lm` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.lm_harness import LMComparison, add_common_tail, add_recurrent_args, add_run_args, finish_args  # noqa: E402
from benchmarks.machine import make_parser  # noqa: E402
from jaxdl import cli  # noqa: E402

LR, CLIP_NORM = 2e-3, 1.0
QUICK = {"embed": 8, "hidden": 16, "layers": 1, "seq_len": 16, "batch_size": 8}  # with 6 steps in 2 rounds


def parse_args(argv):
    p = make_parser(__doc__)
    add_recurrent_args(p)
    add_run_args(p, batch_size=32, steps=300)
    p.add_argument("--torch-onednn", default="on", choices=("on", "off"),
                   help="PyTorch's LSTM on oneDNN's fused LSTM kernel (its default on x86 CPUs) or, with off, "
                        "on its own per-step kernels, as its GRU and RNN always are")
    add_common_tail(p)
    return finish_args(p, argv, ("embed", "hidden", "layers", "seq_len", "batch_size", "rounds", "threads", "unroll"),
                       quick=QUICK)


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    bench = LMComparison(args, args.seq_len, __file__)  # pins the threads, configures XLA as experiments/rnn.py, loads the data
    import jax
    import torch

    torch.backends.mkldnn.enabled = args.torch_onednn == "on"

    from benchmarks.torch_lm import TorchLM, lm_params_to_torch
    from jaxdl.models.recurrent import RecurrentLM
    from jaxdl.tasks.language_model import LanguageModel

    B, T, V = args.batch_size, args.seq_len, bench.vocab_size
    model = RecurrentLM(V, args.cell, args.embed, args.hidden, args.layers, dropout=0.0, unroll=args.unroll)
    task = LanguageModel(model)
    params = task.init(jax.random.key(args.seed), {"tokens": bench.batches_np[0]})
    net = lm_params_to_torch(params, TorchLM(V, args.cell, args.embed, args.hidden, args.layers)).train()
    n_params, n_torch = bench.set_models(task, params, net)
    print(f"{args.cell} language model: {args.layers} x {args.hidden} hidden, embed {args.embed}, "
          f"{n_params:,} parameters (torch {n_torch:,}); batch {B} x seq {T} = {bench.tokens_per_step} tokens per step")
    bench.check_same_start()

    bench.train(LR, CLIP_NORM)
    bench.validate()
    bench.summarize()
    print(f"\n{args.cell.upper()} char LM, {args.layers} x {args.hidden} hidden, embed {args.embed}, batch {B}, "
          f"seq {T}, {args.steps} steps, Adam {LR:g} + clip {CLIP_NORM:g}; medians over {args.rounds} interleaved rounds; "
          f"PyTorch's oneDNN {args.torch_onednn}\n")
    bench.print_table()
    bench.print_summary()
    return bench.finish()


if __name__ == "__main__":
    cli.run(main)
