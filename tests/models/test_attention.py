"""Attention: sinusoidal and rotary encodings (against float64 numpy and by their properties), causal and padding
masks through gradients, grouped-query attention, the per-sequence key/value cache, error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.attention import MultiHeadAttention, causal_mask, padding_mask, rope, sinusoidal, write_cache


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    """The tolerances are for float32 arithmetic: no TF32 where the default allows it (GPUs); a no-op on CPU."""
    with jax.default_matmul_precision("highest"):
        yield


def _normal(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _positions(B, T):
    return np.broadcast_to(np.arange(T, dtype=np.int32), (B, T))


def _params(module, rng, *args, **kwargs):
    """Params with the module's shapes drawn with numpy (no compiled init): normal, std 1/sqrt(width), biases too."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args, **kwargs)
    scale = 1.0 / np.sqrt(args[0].shape[-1])
    return jax.tree.map(lambda s: _normal(rng, s.shape, scale), shapes)


# (a) sinusoidal positions ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length,d", [(64, 16), (7, 9), (3, 1)])
def test_sinusoidal_is_the_papers_formula(length, d):
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same), in float64 numpy; odd d keeps d columns (1e-5)."""
    pe = np.asarray(sinusoidal(length, d))
    assert pe.shape == (length, d) and pe.dtype == np.float32
    want = np.empty((length, d))
    for p in range(length):
        for j in range(d):
            angle = p / 10000.0 ** (2 * (j // 2) / d)
            want[p, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    np.testing.assert_allclose(pe, want, rtol=0, atol=1e-5)


# (b) rotary positions ----------------------------------------------------------------------------------------------

def test_rope_is_a_rotation_of_half_pairs():
    """Against float64 numpy: (x[i] + 1j x[i + H/2]) * exp(1j p 10000^(-2i/H)) (1e-4: float32 angles up to ~100)."""
    rng = np.random.default_rng(0)
    B, T, N, H = 2, 5, 3, 8
    x = _normal(rng, (B, T, N, H))
    pos = rng.integers(0, 100, (B, T))
    got = np.asarray(rope(x, pos))
    xx = np.asarray(x, np.float64)
    z = (xx[..., :H // 2] + 1j * xx[..., H // 2:]) * np.exp(
        1j * np.asarray(pos, np.float64)[:, :, None, None] * 10000.0 ** (-2 * np.arange(H // 2) / H))
    np.testing.assert_allclose(got, np.concatenate([z.real, z.imag], axis=-1), rtol=0, atol=1e-4)


def test_rope_scores_depend_only_on_the_offset():
    """q(m).k(n) == q(m+c).k(n+c) (1e-3 on scores of size ~5; float32 angles up to ~160); a different offset differs."""
    rng = np.random.default_rng(1)
    N, H = 3, 16
    q, k = _normal(rng, (1, 1, N, H)), _normal(rng, (1, 1, N, H))
    pairs = [(0, 0), (5, 2), (2, 5), (17, 30), (40, 1)]
    shifts = (0, 1, 7, 123)
    m = np.asarray([[m + c for m, _ in pairs for c in shifts]])  # (1, P): every pair at every shift, in one call
    n = np.asarray([[n + c for _, n in pairs for c in shifts]])
    q_P, k_P = np.broadcast_to(q, (1, m.shape[1], N, H)), np.broadcast_to(k, (1, m.shape[1], N, H))
    scores = np.sum(np.asarray(rope(q_P, m)) * np.asarray(rope(k_P, n)), axis=-1).reshape(len(pairs), len(shifts), N)
    for i, pair in enumerate(pairs):
        for j, c in enumerate(shifts[1:], 1):
            np.testing.assert_allclose(scores[i, j], scores[i, 0], rtol=0, atol=1e-3, err_msg=f"{pair} shifted by {c}")
    # the score does depend on the offset: (5, 2) vs (2, 5), and vs no rotation at all
    assert np.abs(scores[1, 0] - scores[2, 0]).max() > 1e-2
    assert np.abs(scores[1, 0] - np.sum(q * k, -1)[0, 0]).max() > 1e-2


def test_rope_preserves_norms_and_position_zero_is_identity():
    """Each head vector keeps its norm (rtol 1e-5); position 0 returns the input bit-exactly."""
    rng = np.random.default_rng(2)
    x = _normal(rng, (2, 6, 4, 8))
    pos = rng.integers(1, 500, (2, 6))
    rotated = np.asarray(rope(x, pos))
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_array_equal(rope(x, np.zeros((2, 6), np.int32)), x)
    assert not np.allclose(rotated, x, atol=1e-2)


# (c) masks ---------------------------------------------------------------------------------------------------------

def test_masks_shapes_and_values():
    pos = jnp.asarray([[0, 1, 2], [4, 5, 6]])
    m = np.asarray(causal_mask(pos, 8))
    assert m.shape == (2, 1, 3, 8)
    np.testing.assert_array_equal(m[:, 0], np.arange(8)[None, None, :] <= np.asarray(pos)[:, :, None])
    p = np.asarray(padding_mask(jnp.asarray([3, 0, 5]), 5))
    assert p.shape == (3, 1, 1, 5)
    np.testing.assert_array_equal(p[:, 0, 0], [[1, 1, 1, 0, 0], [0] * 5, [1] * 5])


@pytest.mark.parametrize("rotary", [False, True])
def test_causal_attention_has_no_gradient_from_the_future(rotary):
    """d out[b, t] / d x[b, s] is exactly zero for s > t (and across the batch), non-zero for s <= t; without the
    mask the future blocks are non-zero (so the check can fail)."""
    rng = np.random.default_rng(3)
    B, T, D = 2, 6, 16
    mha = MultiHeadAttention(4, rotary=rotary)
    x = _normal(rng, (B, T, D))
    pos = _positions(B, T)
    params = _params(mha, rng, x, positions_BT=pos)
    jac = jax.jit(jax.jacrev(lambda x, mask: mha.apply(params, x, mask=mask, positions_BT=pos)[0]))
    J = np.asarray(jac(x, causal_mask(pos, T)))  # (B, T, D, B, T, D)
    for b in range(B):
        for t in range(T):
            for s in range(T):
                block = np.abs(J[b, t, :, b, s, :])
                if s > t:
                    assert not block.any(), f"output {t} depends on input {s}"
                else:
                    assert block.max() > 1e-4, f"output {t} does not depend on input {s}"
    assert not J[0, :, :, 1].any() and not J[1, :, :, 0].any()
    J_full = np.asarray(jac(x, np.ones((B, 1, T, T), bool)))
    assert np.abs(J_full[0, 0, :, 0, T - 1]).max() > 1e-4


@pytest.mark.parametrize("cross", [False, True])
def test_padded_keys_change_nothing(cross):
    """With a padding mask, new values at padded key positions leave every real query's output bit-identical
    (self-attention over a padded sequence; cross-attention to a padded context); real keys do matter."""
    rng = np.random.default_rng(4)
    B, T, S, D = 3, 5, 6, 16
    lengths = np.asarray([6, 3, 1])
    mha = MultiHeadAttention(4, num_kv_heads=2)
    x = _normal(rng, (B, S if not cross else T, D))
    ctx = _normal(rng, (B, S, D))
    params = _params(mha, rng, x, ctx if cross else None)
    pad_BS = np.arange(S)[None, :] >= lengths[:, None]

    if cross:
        mask = padding_mask(jnp.asarray(lengths), S)
        run = jax.jit(lambda c: mha.apply(params, x, c, mask=mask)[0])
        base, changed = ctx, np.where(pad_BS[..., None], _normal(rng, ctx.shape, 100.0), ctx)
        real_BT = np.ones((B, T), bool)  # every query is real; only the context is padded
    else:
        mask = padding_mask(jnp.asarray(lengths), S)  # bidirectional, as in the encoder (causal would hide padding)
        run = jax.jit(lambda x: mha.apply(params, x, mask=mask)[0])
        base, changed = x, np.where(pad_BS[..., None], _normal(rng, x.shape, 100.0), x)
        real_BT = ~pad_BS
    y, y2 = np.asarray(run(base)), np.asarray(run(changed))
    np.testing.assert_array_equal(y2[real_BT], y[real_BT])
    touched = base.copy()
    touched[:, 0] += 1.0  # position 0 is real in every sequence
    assert np.abs(np.asarray(run(touched))[real_BT] - y[real_BT]).max() > 1e-4


# (d) grouped-query attention ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rotary", [False, True])
def test_grouped_query_attention_is_mha_with_repeated_kv_heads(rotary):
    """num_kv_heads=2 of 4 == plain 4-head attention whose key/value projections repeat kv head g for query heads
    2g and 2g+1 (1e-5); the returned cache holds only the 2 kv heads. Tiling (g for heads g and g+2) differs."""
    rng = np.random.default_rng(5)
    B, T, D, N, K = 2, 5, 16, 4, 2
    G = N // K
    gqa, mha = MultiHeadAttention(N, K, rotary=rotary), MultiHeadAttention(N, rotary=rotary)
    x = _normal(rng, (B, T, D))
    pos = _positions(B, T)
    mask = np.asarray(causal_mask(pos, T))
    p = _params(gqa, rng, x, positions_BT=pos)

    def widen(p, repeat):
        q = jax.tree.map(lambda a: a, p)
        for name in ("key", "value"):
            q["params"][name] = {"kernel": repeat(np.asarray(p["params"][name]["kernel"]), 1),
                                 "bias": repeat(np.asarray(p["params"][name]["bias"]), 0)}
        return q

    p_rep = widen(p, lambda a, axis: np.repeat(a, G, axis=axis))
    assert jax.tree.map(jnp.shape, p_rep) == jax.tree.map(jnp.shape, jax.eval_shape(mha.init, jax.random.key(1), x,
                                                                                       positions_BT=pos))
    run_gqa, run_mha = (jax.jit(lambda p, m=m: m.apply(p, x, mask=mask, positions_BT=pos)) for m in (gqa, mha))
    (y, kv), (y_rep, kv_rep) = jax.device_get((run_gqa(p), run_mha(p_rep)))
    np.testing.assert_allclose(y, y_rep, rtol=0, atol=1e-5)
    assert kv["k"].shape == kv["v"].shape == (B, T, K, D // N)
    np.testing.assert_allclose(kv["k"], kv_rep["k"][:, :, ::G], rtol=0, atol=1e-6)
    p_tiled = widen(p, lambda a, axis: np.concatenate([a] * G, axis=axis))
    assert np.abs(np.asarray(run_mha(p_tiled)[0]) - y).max() > 1e-3


# (e) the key/value cache -------------------------------------------------------------------------------------------

def test_write_cache_writes_each_sequence_at_its_own_offset():
    rng = np.random.default_rng(6)
    cache, new = rng.standard_normal((3, 8, 2, 4)), rng.standard_normal((3, 3, 2, 4))
    start = [0, 5, 2]
    want = cache.copy()
    for b, s in enumerate(start):
        want[b, s:s + 3] = new[b]
    got = write_cache(jnp.asarray(cache, jnp.float32), jnp.asarray(new, jnp.float32), jnp.asarray(start))
    np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("rotary,kv_heads", [(False, None), (True, 2)])
def test_cache_decoding_matches_full_attention(rotary, kv_heads):
    """A cache holding each sequence's first index[b] keys/values (junk after them), then one new position per call
    (index differs per sequence) and a final 2-position chunk: outputs == full causal attention at those positions
    (1e-5); the new keys/values land exactly at index[b], every other cache position is untouched."""
    rng = np.random.default_rng(7)
    B, S, D = 3, 12, 16
    mha = MultiHeadAttention(4, kv_heads, rotary=rotary)
    x = _normal(rng, (B, S, D))
    pos = _positions(B, S)
    params = _params(mha, rng, x, positions_BT=pos)
    y_full, kv_full = jax.device_get(jax.jit(mha.apply)(params, x, mask=causal_mask(pos, S), positions_BT=pos))
    index = np.asarray([2, 5, 0])
    filled = (np.arange(S)[None, :] < index[:, None])[..., None, None]
    cache = {name: np.where(filled, kv_full[name], _normal(rng, kv_full[name].shape, 10.0)) for name in ("k", "v")}
    cache["index"] = index.astype(np.int32)

    @jax.jit
    def step(x_BTD, cache):
        pos_BT = cache["index"][:, None] + jnp.arange(x_BTD.shape[1])
        return mha.apply(params, x_BTD, mask=causal_mask(pos_BT, S), positions_BT=pos_BT, cache=cache)

    for T in (1, 1, 1, 1, 2):
        idx = np.asarray(cache["index"])
        at_BT = idx[:, None] + np.arange(T)
        rows = np.arange(B)[:, None]
        y, new = jax.device_get(step(x[rows, at_BT], cache))
        np.testing.assert_allclose(y, y_full[rows, at_BT], rtol=0, atol=1e-5, err_msg=f"at {at_BT}")
        np.testing.assert_array_equal(new["index"], idx + T)
        for name in ("k", "v"):
            written = np.zeros((B, S), bool)
            written[rows, at_BT] = True
            old, got = cache[name], new[name]
            np.testing.assert_array_equal(got[~written], old[~written])
            np.testing.assert_allclose(got[written], kv_full[name][written], rtol=0, atol=1e-5)
        cache = new


# (f) errors --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("heads,kv_heads", [(3, None), (4, 3), (5, 5)])
def test_heads_must_divide(heads, kv_heads):
    x = np.zeros((1, 2, 16), np.float32)
    with pytest.raises(ValueError, match="heads must divide"):
        jax.eval_shape(MultiHeadAttention(heads, kv_heads).init, jax.random.key(0), x)


def test_rotary_cross_attention_raises():
    x = np.zeros((1, 2, 16), np.float32)
    with pytest.raises(ValueError, match="rotary positions are for self-attention"):
        jax.eval_shape(MultiHeadAttention(4, rotary=True).init, jax.random.key(0), x, x, positions_BT=_positions(1, 2))
