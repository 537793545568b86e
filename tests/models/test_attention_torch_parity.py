"""MultiHeadAttention vs torch.nn.MultiheadAttention: the same weights give the same outputs (self-attention,
causal and key-padding masks, cross-attention to a longer context); grouped-query attention equals plain
multi-head attention with each key/value head repeated."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdl.models.attention import MultiHeadAttention, causal_mask, padding_mask  # noqa: E402

torch.set_num_threads(2)

B, T, S, D, N = 3, 7, 11, 24, 4  # S: the context's length for cross-attention
H = D // N
LENGTHS = [T, 4, 1]  # key lengths for the padding mask: one full, one of length 1
CONTEXT_LENGTHS = [9, S, 2]
ATOL = 1e-5
APPLY = {k: jax.jit(MultiHeadAttention(N, k).apply) for k in (None, 1, 2)}  # jitted: one compile, not one per op


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    """The tolerances are for float32 arithmetic: no TF32 where the default allows it (GPUs); a no-op on CPU."""
    with jax.default_matmul_precision("highest"):
        yield


def _torch_mha(seed=0):
    torch.manual_seed(seed)
    mha = torch.nn.MultiheadAttention(D, N, batch_first=True, bias=True).float().eval()
    with torch.no_grad():  # torch starts the biases at zero: make them non-zero so a dropped bias shows
        mha.in_proj_bias.copy_(0.3 * torch.randn(3 * D))
        mha.out_proj.bias.copy_(0.3 * torch.randn(D))
    return mha


def mha_params_from_torch(mha) -> dict:
    """torch.nn.MultiheadAttention's weights -> MultiHeadAttention(N)'s Flax params.

    torch: q = x W_q^T + b_q with W_q the first D rows of in_proj_weight (then keys, values), head n
    the outputs n*H..(n+1)*H; out = concat_heads(y) W_o^T + b_o. Flax DenseGeneral: kernels (D, N, H),
    biases (N, H), the output kernel (N, H, D)."""
    w_3DD = mha.in_proj_weight.detach().numpy().reshape(3, D, D)
    b_3D = mha.in_proj_bias.detach().numpy().reshape(3, D)
    p = {name: {"kernel": jnp.asarray(w_3DD[i].T.reshape(D, N, H)), "bias": jnp.asarray(b_3D[i].reshape(N, H))}
         for i, name in enumerate(("query", "key", "value"))}
    p["out"] = {"kernel": jnp.asarray(mha.out_proj.weight.detach().numpy().T.reshape(N, H, D)),
                "bias": jnp.asarray(mha.out_proj.bias.detach().numpy())}
    return {"params": p}


def _x(seed, length):
    return np.random.default_rng(seed).standard_normal((B, length, D)).astype(np.float32)


def _check(ours, theirs):
    ours, theirs = np.asarray(ours), theirs.detach().numpy()
    assert ours.shape == theirs.shape
    assert np.all(np.isfinite(ours))
    assert np.abs(theirs).max() > 0.1  # O(1) outputs: the absolute tolerance means something
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL)


def test_converter_matches_the_flax_layout():
    mha = _torch_mha()
    ours = jax.tree.map(jnp.shape, mha_params_from_torch(mha))
    init = jax.eval_shape(MultiHeadAttention(N).init, jax.random.key(0), jnp.zeros((1, T, D)))
    assert ours == jax.tree.map(jnp.shape, init)


def test_self_attention():
    mha, x = _torch_mha(), _x(0, T)
    ours, _ = APPLY[None](mha_params_from_torch(mha), x)
    with torch.no_grad():
        theirs, _ = mha(*(torch.from_numpy(x),) * 3, need_weights=False)
    _check(ours, theirs)


def test_causal_mask():
    mha, x = _torch_mha(1), _x(1, T)
    mask = causal_mask(jnp.broadcast_to(jnp.arange(T), (B, T)), T)  # True = may attend
    ours, _ = APPLY[None](mha_params_from_torch(mha), x, mask=mask)
    not_allowed = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # torch: True = may NOT attend
    with torch.no_grad():
        theirs, _ = mha(*(torch.from_numpy(x),) * 3, attn_mask=not_allowed, need_weights=False)
    _check(ours, theirs)
    with torch.no_grad():  # the mask really matters here
        unmasked, _ = mha(*(torch.from_numpy(x),) * 3, need_weights=False)
    assert np.abs(np.asarray(ours) - unmasked.numpy()).max() > 1e-2


def test_key_padding_mask():
    mha, x = _torch_mha(2), _x(2, T)
    lengths = np.array(LENGTHS)
    ours, _ = APPLY[None](mha_params_from_torch(mha), x, mask=padding_mask(jnp.asarray(lengths), T))
    padded = torch.from_numpy(np.arange(T)[None, :] >= lengths[:, None])  # torch: True = padding, ignored
    with torch.no_grad():
        theirs, _ = mha(*(torch.from_numpy(x),) * 3, key_padding_mask=padded, need_weights=False)
    _check(ours, theirs)


def test_causal_and_padding_masks_together():
    mha, x = _torch_mha(3), _x(3, T)
    lengths = np.array(LENGTHS)
    mask = causal_mask(jnp.broadcast_to(jnp.arange(T), (B, T)), T) & padding_mask(jnp.asarray(lengths), T)
    ours, _ = APPLY[None](mha_params_from_torch(mha), x, mask=mask)
    with torch.no_grad():
        theirs, _ = mha(*(torch.from_numpy(x),) * 3, attn_mask=torch.triu(torch.ones(T, T, dtype=torch.bool), 1),
                        key_padding_mask=torch.from_numpy(np.arange(T)[None, :] >= lengths[:, None]),
                        need_weights=False)
    _check(ours, theirs)


def test_cross_attention_with_padding():
    mha, x, context = _torch_mha(4), _x(4, T), _x(5, S)
    lengths = np.array(CONTEXT_LENGTHS)
    ours, kv = APPLY[None](mha_params_from_torch(mha), x, context,
                                           mask=padding_mask(jnp.asarray(lengths), S))
    assert ours.shape == (B, T, D) and kv["k"].shape == (B, S, N, H)
    c = torch.from_numpy(context)
    with torch.no_grad():
        theirs, _ = mha(torch.from_numpy(x), c, c, key_padding_mask=torch.from_numpy(np.arange(S)[None, :] >= lengths[:, None]),
                        need_weights=False)
    _check(ours, theirs)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_equals_repeated_key_value_heads(kv_heads):
    """Query head n reads key/value head n // (N / K): repeating each of the K heads N / K times in
    the key and value projections gives plain multi-head attention with the same outputs."""
    x = _x(6, T)
    mask = causal_mask(jnp.broadcast_to(jnp.arange(T), (B, T)), T)
    rng = np.random.default_rng(kv_heads)  # random weights, non-zero biases; numpy draws: no compiles
    shapes = jax.eval_shape(MultiHeadAttention(N, kv_heads).init, jax.random.key(0), x, mask=mask)
    params = jax.tree.map(lambda a: jnp.asarray(0.3 * rng.standard_normal(a.shape), jnp.float32), shapes)
    ours, _ = APPLY[kv_heads](params, x, mask=mask)
    p = params["params"]
    repeat = lambda a, axis: jnp.repeat(a, N // kv_heads, axis=axis)
    full = {**p, **{n: {"kernel": repeat(p[n]["kernel"], 1), "bias": repeat(p[n]["bias"], 0)} for n in ("key", "value")}}
    theirs, _ = APPLY[None]({"params": full}, x, mask=mask)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=0, atol=ATOL)
    # and it is not plain multi-head attention by accident: tiling instead of repeating differs
    tiled = {**p, **{n: {"kernel": jnp.tile(p[n]["kernel"], (1, N // kv_heads, 1)),
                         "bias": jnp.tile(p[n]["bias"], (N // kv_heads, 1))} for n in ("key", "value")}}
    other, _ = APPLY[None]({"params": tiled}, x, mask=mask)
    if kv_heads > 1:
        assert np.abs(np.asarray(other) - np.asarray(ours)).max() > 1e-3
