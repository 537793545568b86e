"""Transformers: scanned == looped layers, remat changes nothing, causality (token changes and gradients), cached
decoding == full recomputation for ragged prompts, encoder padding invariance, tied embeddings, bf16, GPT-2's options
(the tanh GELU, LayerNorm's two-pass variance) against a float64 block, config errors.

Compiling is most of the cost on CPU: data are prepared in numpy, params drawn in numpy, and each test jits one or
two functions."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.models.attention import POSITIONS, causal_mask
from jaxdl.models.transformer import Block, DecoderLM, Encoder, EncoderDecoder, unstack_layers

V = 32  # vocabulary
SMALL = dict(vocab_size=V, d_model=32, num_heads=4, max_len=16)


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    """The tolerances are for float32 arithmetic: no TF32 where the default allows it (GPUs); a no-op on CPU."""
    with jax.default_matmul_precision("highest"):
        yield


def _lm(**kw):
    return DecoderLM(**{**SMALL, "num_layers": 2, **kw})


def _s2s(**kw):
    return EncoderDecoder(**{**SMALL, "encoder_layers": 2, "decoder_layers": 2, **kw})


def _params(model, rng, *args, **kwargs):
    """Params with the model's shapes drawn with numpy (no compiled init), large enough that every part matters:
    embeddings N(0, 1), kernels N(0, 1/width), biases N(0, 0.1^2), norm scales 1 + N(0, 0.1^2)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs)

    def draw(path, s):
        name = jax.tree_util.keystr(path[-1:])
        std = {"['embedding']": 1.0, "['kernel']": 1.0 / np.sqrt(SMALL["d_model"])}.get(name, 0.1)
        return ((name == "['scale']") + std * rng.standard_normal(s.shape)).astype(np.float32)  # numpy: no device op

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _tokens(rng, shape):
    return rng.integers(0, V, shape).astype(np.int32)


# (a) scanned == looped layers; remat == no remat -------------------------------------------------------------------

def _unscan(params, stacks, num_layers=2):
    """The same params for scan=False: each Stack's {"layers": leading layer axis} -> {"layers_i": ...}."""
    params = jax.tree.map(lambda a: a, params)  # a copy of the containers
    for path in stacks:
        holder = params["params"]
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = unstack_layers(holder[path[-1]], num_layers)
    return params


@pytest.mark.parametrize("kind", ["lm", "encoder", "seq2seq"])
def test_scanned_and_looped_layers_agree(kind):
    """The same params (through unstack_layers) in scan=True and scan=False give the same outputs (1e-5 abs), and the
    unstacked tree is exactly the looped model's own; for the LM also the ragged prefill's cache and a cached step."""
    rng = np.random.default_rng(0)
    B, T = 2, 7
    tokens, lengths = _tokens(rng, (B, T)), np.asarray([T, 4])
    if kind == "lm":
        make, args, stacks = _lm, (tokens,), [("stack",)]
    elif kind == "encoder":
        make, args, stacks = lambda **kw: Encoder(**SMALL, num_layers=2, **kw), (tokens, lengths), [("stack",)]
    else:
        make, args = _s2s, (tokens, lengths, _tokens(rng, (B, 5)))
        stacks = [("encoder", "stack"), ("decoder", "stack")]
    scanned, looped = make(scan=True), make(scan=False)
    p_scan = _params(scanned, rng, *args)
    p_loop = _unscan(p_scan, stacks)
    own = jax.eval_shape(looped.init, jax.random.key(0), *args)
    assert jax.tree.structure(p_loop) == jax.tree.structure(own)
    assert jax.tree.map(jnp.shape, p_loop) == jax.tree.map(jnp.shape, own)

    @jax.jit
    def run(p_scan, p_loop):
        outs = []
        for model, p in ((scanned, p_scan), (looped, p_loop)):
            if kind == "lm":  # a ragged prefill, then one cached step
                logits, cache = model.apply(p, tokens, lengths_B=lengths)
                outs.append((logits, cache, model.apply(p, tokens[:, :1], cache)))
            else:
                outs.append(model.apply(p, *args))
        return outs

    a, b = run(p_scan, p_loop)
    assert len(jax.tree.leaves(a)) == (1 if kind != "lm" else 8)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("how", [{"remat": True}, {"unroll": 2}, {"unroll": 2, "num_layers": 3}],
                         ids=["remat", "unroll", "unroll-with-remainder"])
def test_remat_and_unroll_give_the_same_loss_and_gradients(how):
    """DecoderLM, scanned, dropout 0.1 on, the same dropout key: remat=True (or 2 layers per scan iteration, also
    with a remainder) == the plain scan for the loss and every
    gradient (rtol 1e-5, plus 1e-6 of the largest gradient for entries that are rounding noise around zero, such as
    the key bias's: softmax ignores a shift shared by a whole row). Another key gives another loss (dropout is on)."""
    rng = np.random.default_rng(1)
    tokens = _tokens(rng, (2, 6))
    targets = np.roll(tokens, -1, axis=1)
    layers = {"num_layers": how["num_layers"]} if "num_layers" in how else {}
    plain, remat = _lm(dropout=0.1, **layers), _lm(dropout=0.1, **how)
    params = _params(plain, rng, tokens)
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(remat.init, jax.random.key(0), tokens))

    def loss(p, model, seed):
        logits = model.apply(p, tokens, train=True, rngs={"dropout": jax.random.key(seed)})[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def run(p):
        return [jax.value_and_grad(loss)(p, m, 7) for m in (plain, remat)] + [loss(p, plain, 8)]

    (l0, g0), (l1, g1), l_other_key = run(params)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    atol = 1e-6 * max(np.abs(np.asarray(g)).max() for g in jax.tree.leaves(g0))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=f"gradient {jax.tree_util.keystr(path)}")
    assert abs(float(l_other_key) - float(l0)) > 1e-4


# (b) causality -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pos", POSITIONS)
def test_decoder_lm_future_tokens_change_nothing_before_them(pos):
    """Changing every token after t leaves logits[:, :t+1] bit-identical (and does change logits[:, t+1:])."""
    rng = np.random.default_rng(2)
    T = 8
    model = _lm(pos=pos, max_len=12)
    tokens = _tokens(rng, (1, T))
    params = _params(model, rng, tokens)
    # row t + 1 changes every token after t; row 0 is the original
    later = (np.arange(T)[None, :] > np.arange(-1, T)[:, None]) & (np.arange(T + 1)[:, None] > 0)
    variants = np.where(later, (tokens + 1 + rng.integers(0, V - 1, (T + 1, T))) % V, tokens)
    logits = np.asarray(jax.jit(lambda p: model.apply(p, variants)[0])(params))
    for t in range(T):
        np.testing.assert_array_equal(logits[t + 1, :t + 1], logits[0, :t + 1], err_msg=f"tokens after {t} changed")
        if t < T - 1:
            assert np.abs(logits[t + 1, t + 1:] - logits[0, t + 1:]).max(axis=-1).min() > 1e-4


def test_decoder_lm_has_no_gradient_from_the_future():
    """d logits[t] / d (token embedding row of the token at s) and d logits[t] / d (position embedding row s) are
    exactly zero for s > t (position rows past T too) and non-zero for s <= t (the T tokens are distinct, so each
    token row is one position's input)."""
    rng = np.random.default_rng(3)
    T = 8
    model = _lm(pos="learned", max_len=12)
    tokens = rng.permutation(V)[:T][None].astype(np.int32)
    params = _params(model, rng, tokens)
    names = ("token_embedding", "position_embedding")

    def logits_of(tables):
        p = {"params": {**params["params"], **{n: {"embedding": e} for n, e in zip(names, tables)}}}
        return model.apply(p, tokens)[0][0]

    tables = tuple(params["params"][n]["embedding"] for n in names)
    d_tok, d_pos = (np.abs(np.asarray(j)) for j in jax.jit(jax.jacrev(logits_of))(tables))  # (T, V, rows, D)
    for t in range(T):
        for s in range(T):
            if s > t:
                assert not d_tok[t, :, tokens[0, s]].any(), f"logits at {t} depend on the token at {s}"
            else:
                assert d_tok[t, :, tokens[0, s]].max() > 1e-4, f"logits at {t} ignore the token at {s}"
        assert not d_pos[t, :, t + 1:].any(), f"logits at {t} depend on later positions"
        assert (d_pos[t, :, :t + 1].max(axis=(0, 2)) > 1e-4).all(), f"logits at {t} ignore earlier positions"


# (c) cached decoding -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pos,kv_heads", [("learned", None), ("sinusoidal", None), ("rope", 2)])
def test_cached_decoding_matches_full_recompute(pos, kv_heads):
    """Right-padded prompts of lengths 3, 6, 1 (junk tokens in the padding), prefill with lengths_B, then each
    sequence's own next tokens one at a time (4 steps; for rope then also a 2-token chunk): every logit == a full
    no-cache forward of that sequence alone at the same position (1e-5 abs); the cache index advances from each
    length. (The full forwards reuse the compiled prefill: a batch of copies of one sequence, all of full length.)"""
    rng = np.random.default_rng(4)
    lengths = np.asarray([3, 6, 1], np.int32)
    B, L = 3, 12
    model = _lm(pos=pos, num_kv_heads=kv_heads, max_len=16)
    seqs = _tokens(rng, (B, L))
    prompt = np.where(np.arange(L)[None, :] < lengths[:, None], seqs, _tokens(rng, (B, L)))
    params = _params(model, rng, seqs)
    prefill = jax.jit(lambda p, tokens, lengths: model.apply(p, tokens, lengths_B=lengths))
    step = jax.jit(lambda p, tokens, cache: model.apply(p, tokens, cache))
    full = np.stack([np.asarray(prefill(params, np.repeat(seqs[b:b + 1], B, 0), np.full(B, L, np.int32))[0][0])
                     for b in range(B)])  # (B, L, V): sequence b alone
    logits, cache = prefill(params, prompt, lengths)
    logits = np.asarray(logits)
    assert logits.dtype == np.float32 and cache["k"].shape[2] == 16
    np.testing.assert_array_equal(cache["index"], lengths)
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(logits[b, :n], full[b, :n], rtol=0, atol=1e-5, err_msg=f"prefill of {b}")
    rows = np.arange(B)[:, None]
    for T in (1, 1, 1, 1) + ((2,) if pos == "rope" else ()):  # a chunk compiles another step: once is enough
        at_BT = np.asarray(cache["index"])[:, None] + np.arange(T)
        logits, new = step(params, seqs[rows, at_BT], cache)
        np.testing.assert_allclose(np.asarray(logits), full[rows, at_BT], rtol=0, atol=1e-5, err_msg=f"positions {at_BT}")
        np.testing.assert_array_equal(new["index"], at_BT[:, -1] + 1)
        cache = new


# (d) the encoder-decoder -------------------------------------------------------------------------------------------

def test_encoder_ignores_source_padding():
    """New tokens in the source's padding leave the logits bit-identical; a real source token changes them.
    (With rope; the other encodings add to the embeddings before the same masked attention.)"""
    rng = np.random.default_rng(5)
    B, S = 3, 7
    lengths = np.asarray([7, 3, 1], np.int32)
    model = _s2s(pos="rope")
    source, target = _tokens(rng, (B, S)), _tokens(rng, (B, 5))
    params = _params(model, rng, source, lengths, target)
    pad = np.arange(S)[None, :] >= lengths[:, None]
    first = source.copy()
    first[:, 0] = (first[:, 0] + 1) % V  # position 0 is real in every sequence
    sources = np.stack([source, np.where(pad, (source + 1 + rng.integers(0, V - 1, source.shape)) % V, source), first])
    run = jax.jit(jax.vmap(lambda src: model.apply(params, src, lengths, target)))
    base, repadded, changed = np.asarray(run(sources))
    np.testing.assert_array_equal(repadded, base)
    assert np.abs(changed - base).max(axis=(1, 2)).min() > 1e-4


def test_seq2seq_cached_decoding_matches_teacher_forcing():
    """encode, prefill the decoder with right-padded target prefixes (lengths 1, 3, 2), then one token per step:
    every logit == the teacher-forced logits (decode of the whole target, no cache) at that position (1e-5 abs);
    2 kv heads of 4."""
    rng = np.random.default_rng(6)
    B, S, T = 3, 7, 8
    src_lengths, lengths = np.asarray([7, 3, 5], np.int32), np.asarray([1, 3, 2], np.int32)
    model = _s2s(num_kv_heads=2)
    source, target = _tokens(rng, (B, S)), _tokens(rng, (B, T))
    prompt = np.where(np.arange(T)[None, :] < lengths[:, None], target, _tokens(rng, (B, T)))
    params = _params(model, rng, source, src_lengths, target)
    context = jax.jit(lambda p: model.apply(p, source, src_lengths, method="encode"))(params)
    decode = jax.jit(lambda p, tokens, lengths, cache: model.apply(p, tokens, context, src_lengths, cache, lengths,
                                                                   method="decode"))
    forced = np.asarray(decode(params, target, np.full(B, T, np.int32), None)[0])
    logits, cache = decode(params, prompt, lengths, None)
    logits = np.asarray(logits)
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(logits[b, :n], forced[b, :n], rtol=0, atol=1e-5, err_msg=f"prefill of {b}")
    rows = np.arange(B)
    for _ in range(T - 3):
        idx = np.asarray(cache["index"])
        logits, cache = decode(params, target[rows, idx][:, None], None, cache)
        np.testing.assert_allclose(np.asarray(logits)[:, 0], forced[rows, idx], rtol=0, atol=1e-5,
                                   err_msg=f"positions {idx}")


# (e) tied embeddings -----------------------------------------------------------------------------------------------

def test_tied_embeddings_use_the_token_embedding_as_the_head():
    """No `head` params (V*D + V fewer than untied); logits == final-norm output @ E^T (1e-5); changing the embedding
    rows of tokens absent from the input changes exactly those logit columns (bit-identical elsewhere)."""
    rng = np.random.default_rng(7)
    tokens = _tokens(rng, (2, 6)) % (V // 2)  # ids >= V/2 never occur in the input
    tied = _lm(tie_embeddings=True)
    p = _params(tied, rng, tokens)
    untied = jax.eval_shape(_lm().init, jax.random.key(0), tokens)
    assert "head" not in p["params"] and "head" in untied["params"]
    count = lambda p: sum(a.size for a in jax.tree.leaves(p))
    assert count(untied) - count(p) == SMALL["d_model"] * V + V
    E = np.asarray(p["params"]["token_embedding"]["embedding"])
    E2 = np.concatenate([E[:V // 2], rng.standard_normal(E[V // 2:].shape).astype(np.float32)])
    p2 = jax.tree.map(lambda a: a, p)
    p2["params"]["token_embedding"]["embedding"] = E2

    @jax.jit
    def run(p, p2):
        (logits, _), state = tied.apply(p, tokens, capture_intermediates=True, mutable=["intermediates"])
        return logits, state["intermediates"]["final_norm"]["__call__"][0], tied.apply(p2, tokens)[0]

    logits, hidden, logits2 = (np.asarray(a) for a in run(p, p2))
    np.testing.assert_allclose(logits, hidden @ E.T, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(logits2[..., :V // 2], logits[..., :V // 2])
    assert np.abs(logits2[..., V // 2:] - logits[..., V // 2:]).min() > 0


# (f) bf16 ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lm"])  # "seq2seq" passes too; its compile costs seconds
def test_bf16_keeps_float32_params_and_logits(kind):
    """dtype=bfloat16: init gives float32 params (the same tree as float32 mode); logits are float32 and within
    5% of the largest float32 logit (bf16 keeps 8 mantissa bits), yet not identical (bf16 is really used)."""
    rng = np.random.default_rng(8)
    tokens = _tokens(rng, (2, 6))
    make = _lm if kind == "lm" else _s2s
    args = (tokens,) if kind == "lm" else (_tokens(rng, (2, 5)), np.asarray([5, 3], np.int32), tokens)
    m16, m32 = make(dtype=jnp.bfloat16), make()
    shapes = jax.eval_shape(m16.init, jax.random.key(0), *args)
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(shapes))
    assert jax.tree.structure(shapes) == jax.tree.structure(jax.eval_shape(m32.init, jax.random.key(0), *args))
    params = _params(m32, rng, *args)
    logits_of = lambda m, p: m.apply(p, *args)[0] if kind == "lm" else m.apply(p, *args)
    l16, l32 = jax.jit(lambda p: (logits_of(m16, p), logits_of(m32, p)))(params)
    assert l16.dtype == l32.dtype == jnp.float32
    err, scale = float(np.abs(np.asarray(l16) - np.asarray(l32)).max()), float(np.abs(np.asarray(l32)).max())
    assert 0 < err <= 0.05 * scale, (err, scale)


# (g) GPT-2's options: the tanh GELU, LayerNorm's two-pass variance -------------------------------------------------

def _block_reference(p, x_BTD, gelu):
    """One pre-norm block in float64 numpy: LayerNorm with the two-pass variance E[(x - mean)^2], causal
    self-attention, the MLP with the erf GELU or its tanh approximation (GPT-2's gelu_new)."""
    f = lambda a: np.asarray(a, np.float64)

    def norm(q, x):
        centred = x - x.mean(-1, keepdims=True)
        return centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-5) * f(q["scale"]) + f(q["bias"])

    a, x = p["attention"], f(x_BTD)
    h = norm(p["attention_norm"], x)
    q, k, v = (np.einsum("btd,dnh->btnh", h, f(a[n]["kernel"])) + f(a[n]["bias"]) for n in ("query", "key", "value"))
    T = x.shape[1]
    s = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1]) + np.where(np.tril(np.ones((T, T))) > 0, 0, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    x = x + np.einsum("bnts,bsnh,nhd->btd", w, v, f(a["out"]["kernel"])) + f(a["out"]["bias"])
    u = norm(p["mlp_norm"], x) @ f(p["mlp_in"]["kernel"]) + f(p["mlp_in"]["bias"])
    if gelu == "tanh":
        g = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
    else:
        g = 0.5 * u * (1 + np.vectorize(math.erf)(u / np.sqrt(2)))
    return x + g @ f(p["mlp_out"]["kernel"]) + f(p["mlp_out"]["bias"])


def _block_error(offset, gelu, fast_variance=True):
    """max |Block - float64 reference| on inputs N(offset, 1), against the reference with each GELU."""
    rng = np.random.default_rng(9)
    B, T = 2, 6
    x_BTD = (offset + rng.standard_normal((B, T, SMALL["d_model"]))).astype(np.float32)
    positions_BT = np.broadcast_to(np.arange(T), (B, T))
    args = (x_BTD, None, causal_mask(positions_BT, T), positions_BT, None, None, None)
    block = Block(num_heads=SMALL["num_heads"], gelu=gelu, fast_variance=fast_variance)
    inference = types.SimpleNamespace(init=lambda key, *a: block.init(key, *a, False))  # `train` must stay static
    params = _params(inference, rng, *args)
    y = np.asarray(jax.jit(lambda p, *a: block.apply(p, *a, False)[0])(params, *args))
    return {g: float(np.abs(y - _block_reference(params["params"], x_BTD, g)).max()) for g in ("exact", "tanh")}


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
def test_block_gelu_matches_a_float64_reference(gelu):
    """Each `gelu` gives the float64 block with that GELU (1e-5), and not the other one (their difference shows)."""
    err = _block_error(0.0, gelu)
    other = "tanh" if gelu == "exact" else "exact"
    assert err[gelu] < 1e-5 < 1e-4 < err[other], err


def test_two_pass_layer_norm_variance_where_the_mean_dominates():
    """Inputs N(30, 1): the default one-pass variance E[x^2] - E[x]^2 loses digits (what existing runs trained
    with, kept), fast_variance=False (torch's two-pass form, for converted models) stays within 1e-4."""
    assert _block_error(30.0, "tanh", fast_variance=False)["tanh"] < 1e-4 < _block_error(30.0, "tanh")["tanh"]


# (h) config errors -------------------------------------------------------------------------------------------------

BAD = [(dict(pos="alibi"), "unknown positional encoding 'alibi': use one of sinusoidal, learned, rope"),
       (dict(norm="batch"), "unknown norm 'batch': use one of layer, rms"),
       (dict(gelu="fast"), "unknown gelu 'fast': use one of exact, tanh"),
       (dict(d_model=30), "4 heads do not divide the width d_model = 30"),
       (dict(num_kv_heads=3), "3 key/value heads do not divide 4 heads"),
       (dict(d_model=12, pos="rope"), "rotary positions need an even head width, got 3")]


@pytest.mark.parametrize("kind", ["lm", "encoder", "seq2seq"])
@pytest.mark.parametrize("bad,message", BAD, ids=["pos", "norm", "gelu", "heads", "kv_heads", "rope_odd_width"])
def test_bad_config_raises(kind, bad, message):
    tokens = np.zeros((1, 4), np.int32)
    if kind == "lm":
        model, args = _lm(**bad), (tokens,)
    elif kind == "encoder":
        model, args = Encoder(**{**SMALL, "num_layers": 1, **bad}), (tokens,)
    else:
        model, args = _s2s(**bad), (tokens, np.asarray([4]), tokens)
    with pytest.raises(ValueError) as info:
        jax.eval_shape(model.init, jax.random.key(0), *args)
    assert str(info.value).splitlines()[0] == message


@pytest.mark.parametrize("kind", ["lm", "encoder", "seq2seq-source", "seq2seq-target"])
def test_sequence_longer_than_max_len_raises(kind):
    """17 tokens with max_len 16, at init and with valid params at apply."""
    ok, long = np.zeros((1, 16), np.int32), np.zeros((1, 17), np.int32)
    lengths = np.asarray([16])
    if kind == "lm":
        model, good, bad = _lm(), (ok,), (long,)
    elif kind == "encoder":
        model, good, bad = Encoder(**SMALL, num_layers=1), (ok,), (long,)
    elif kind == "seq2seq-source":
        model, good, bad = _s2s(), (ok, lengths, ok), (long, lengths, ok)
    else:
        model, good, bad = _s2s(), (ok, lengths, ok), (ok, lengths, long)
    params = _params(model, np.random.default_rng(0), *good)
    for call in (lambda: model.init(jax.random.key(0), *bad), lambda: model.apply(params, *bad)):
        with pytest.raises(ValueError) as info:
            jax.eval_shape(call)
        assert str(info.value).splitlines()[0] == "17 tokens exceed the context (max_len 16)"
