"""Text generation with a key/value cache against recomputing the whole sequence for every token.

    python benchmarks/generation_speed.py [--layers 4] [--heads 4] [--d-model 128] [--context 512]
                                          [--vocab 65] [--prompt-len 16] [--new-tokens 256]
                                          [--batch-size 1] [--repeats 5] [--seed 0] [--quick] [--json PATH]

The model: a `DecoderLM` (pre-norm, learned positions, LayerNorm, untied head, float32) with random
initial weights (speed does not depend on what the weights are), prompts of --prompt-len random
tokens, greedy decoding (temperature 0) of --new-tokens tokens for each of --batch-size prompts.

  cached    `LanguageModel.generate`: one jitted program, a prefill of the prompt (which fills a
            key/value cache of `context` positions) then a `lax.while_loop` of one-token steps;
            each step runs the model on one token, attending to the cached keys and values.
  uncached  also one jitted program: a `lax.fori_loop` over the new tokens whose every step runs the
            full model (`model.apply(params, buffer)`) over a fixed buffer of prompt + new-tokens
            positions, takes the logits at the last filled position, and writes the argmax token
            into the next one. The positions after it still hold padding (zeros), which is harmless:
            attention is causal, so no position sees anything after itself, and the logits read
            are exactly those of the sequence so far. The buffer has a fixed size because a jitted
            program needs fixed shapes; so every step costs a forward pass over prompt + new-tokens
            positions, where a recompute that grew with the sequence would average about half that
            (prompt + new-tokens / 2). The ratio below is therefore against the fixed-shape recompute
            one would write in JAX, not against the least work a recompute could do.

Both are compiled apart from timing: the first call of each (compile + one run) is reported on its
own; then --repeats timed calls of each, alternating (so machine noise hits both alike); tokens/s =
batch x new tokens / the median seconds per call. Target: cached >= 5x the uncached tokens/s.

Both are greedy on the same model, so they must produce the same tokens, up to float near-ties
(the two paths sum attention in a different order and over a different number of masked
positions); the script prints whether they match and, where not, the first difference and the gap
between the two best logits there.

--quick checks the script end to end in well under a minute (most of it compiling): 1 layer x
2 heads, width 16, context 32, a 4-token prompt, 8 new tokens, 1 repeat (any of these given as
flags still wins); its figures measure nothing.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks.machine` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.lm_harness import add_gpt_args, check_heads  # noqa: E402
from benchmarks.machine import check_positive, make_parser, parse_quick, write_json  # noqa: E402
from jaxdl import cli  # noqa: E402

TARGET_RATIO = 5.0
QUICK = {"layers": 1, "heads": 2, "d_model": 16, "context": 32, "prompt_len": 4, "new_tokens": 8, "repeats": 1}


def parse_args(argv):
    p = make_parser(__doc__)
    add_gpt_args(p)
    p.add_argument("--context", type=int, default=512, help="the model's max_len (and the key/value cache's length)")
    p.add_argument("--vocab", type=int, default=65, help="vocabulary size (65: tiny Shakespeare's characters)")
    p.add_argument("--prompt-len", type=int, default=16, help="prompt tokens per sequence")
    p.add_argument("--new-tokens", type=int, default=256, help="tokens generated after each prompt")
    p.add_argument("--batch-size", type=int, default=1, help="prompts generated from at once")
    p.add_argument("--repeats", type=int, default=5, help="timed calls of each method (median reported)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the prompts")
    p.add_argument("--quick", action="store_true", help="a tiny model and one repeat: checks the script (see above)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parse_quick(p, argv, QUICK)
    check_positive(p, args, ("layers", "heads", "d_model", "context", "vocab", "prompt_len", "new_tokens",
                             "batch_size", "repeats"))
    check_heads(p, args)
    if args.prompt_len + args.new_tokens > args.context:
        p.error(f"--prompt-len {args.prompt_len} + --new-tokens {args.new_tokens} must fit in --context "
                f"{args.context} (both methods then run as one program, without sliding windows)")
    return args


def make_uncached(model, new_tokens: int):
    """A jitted (params, prompt_BP) -> new tokens (B, new_tokens): greedy, full recompute per token."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def generate(params, prompt_BP):
        B, P = prompt_BP.shape
        buffer_BS = jnp.zeros((B, P + new_tokens), jnp.int32).at[:, :P].set(prompt_BP)

        def step(i, buffer_BS):
            logits_BSV, _ = model.apply(params, buffer_BS)  # causal: the padding after P + i is never seen
            last_BV = jax.lax.dynamic_index_in_dim(logits_BSV, P + i - 1, axis=1, keepdims=False)
            token_B = jnp.argmax(last_BV, axis=-1).astype(jnp.int32)
            return jax.lax.dynamic_update_slice_in_dim(buffer_BS, token_B[:, None], P + i, axis=1)

        return jax.lax.fori_loop(0, new_tokens, step, buffer_BS)[:, P:]

    return generate


def first_difference(model, params, prompt_BP, cached_BN, uncached_BN) -> dict | None:
    """Where the two outputs first differ (row, new-token index) and the top-2 logit gap there."""
    import jax.numpy as jnp
    import numpy as np

    diff = np.argwhere(cached_BN != uncached_BN)
    if not len(diff):
        return None
    i = int(diff[:, 1].min())
    b = int(diff[diff[:, 1] == i][0, 0])
    seq = np.concatenate([prompt_BP[b], cached_BN[b, :i]])[None]
    logits_V = np.asarray(model.apply(params, jnp.asarray(seq))[0][0, -1])
    top2 = np.sort(logits_V)[-2:]
    return {"row": b, "new_token": i, "of": int(cached_BN.shape[1]), "top2_logit_gap": float(top2[1] - top2[0]),
            "differing_tokens": int((cached_BN != uncached_BN).sum())}


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from jaxdl import runtime

    xla_flags = runtime.configure(__file__)  # the same process settings as the experiment scripts

    import jax
    import numpy as np

    from jaxdl.models.transformer import DecoderLM
    from jaxdl.tasks.language_model import LanguageModel
    from jaxdl.train.state import num_params

    B, P, N = args.batch_size, args.prompt_len, args.new_tokens
    model = DecoderLM(args.vocab, d_model=args.d_model, num_layers=args.layers, num_heads=args.heads,
                      max_len=args.context, dropout=0.0)
    task = LanguageModel(model)
    prompt_BP = np.random.default_rng(args.seed).integers(0, args.vocab, (B, P)).astype(np.int32)
    params = task.init(jax.random.key(args.seed), {"tokens": np.zeros((1, 2), np.int32)})
    key = jax.random.key(args.seed)
    uncached_fn = make_uncached(model, N)
    prompt_dev = jax.device_put(prompt_BP)
    methods = {
        "cached": lambda: task.generate(params, prompt_BP, key, N, temperature=0.0),
        "uncached": lambda: np.asarray(uncached_fn(params, prompt_dev)),
    }
    dev = jax.devices()[0]
    print(f"DecoderLM: {args.layers} layers x {args.heads} heads, width {args.d_model}, context {args.context}, "
          f"vocab {args.vocab}, {num_params(params):,} parameters (random init); batch {B}, prompt {P} tokens, "
          f"{N} new tokens, greedy; device {dev.platform} {dev.device_kind}; jax {jax.__version__}; "
          f"XLA flags added: {' '.join(xla_flags) or 'none'}")

    outputs, first_s = {}, {}
    for name, run in methods.items():  # compile + one run, apart from the timing
        t = time.perf_counter()
        outputs[name] = run()
        first_s[name] = time.perf_counter() - t
    seconds = {name: [] for name in methods}
    for r in range(args.repeats):
        for name in (("cached", "uncached") if r % 2 == 0 else ("uncached", "cached")):
            t = time.perf_counter()
            methods[name]()
            seconds[name].append(time.perf_counter() - t)

    rows = {}
    for name in methods:
        sec = statistics.median(seconds[name])
        rows[name] = {"tokens_per_s": B * N / sec, "ms_per_step": 1e3 * sec / N, "seconds_per_call": sec,
                      "first_call_s": first_s[name], "seconds_per_repeat": seconds[name]}
    ratio = rows["cached"]["tokens_per_s"] / rows["uncached"]["tokens_per_s"]
    match = bool(np.array_equal(outputs["cached"], outputs["uncached"]))
    difference = None if match else first_difference(model, params, prompt_BP, outputs["cached"], outputs["uncached"])

    what = {"cached": "prefill + 1-token steps on the KV cache", "uncached": f"full model over {P + N} positions per token"}
    print(f"\n| method | tokens/s | ms/step | s/call (median of {args.repeats}) | first call s (compile + run) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} ({what[name]}) | {r['tokens_per_s']:,.0f} | {r['ms_per_step']:.3f} | "
              f"{r['seconds_per_call']:.4f} | {r['first_call_s']:.2f} |")
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(f"\ncached / uncached tokens/s: {ratio:.1f}x ({verdict} the {TARGET_RATIO:g}x target)")
    if match:
        print(f"same greedy tokens: yes (all {B} x {N})")
    else:
        d = difference
        print(f"same greedy tokens: no: {d['differing_tokens']} of {B * N} differ, the first at new token "
              f"{d['new_token']} of row {d['row']}, where the two best logits are {d['top2_logit_gap']:.2e} apart "
              "(a float near-tie: after it the sequences go their own ways)")

    figures = {"config": vars(args), "rows": rows, "cached_over_uncached": ratio, "same_tokens": match,
               "first_difference": difference, "num_params": num_params(params), "xla_flags": os.environ.get("XLA_FLAGS", ""),
               "device": f"{dev.platform} {dev.device_kind}", "jax": jax.__version__}
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    cli.run(main)
