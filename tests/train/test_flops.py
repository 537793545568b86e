"""Model FLOPs counted from a jaxpr (jaxdl/train/flops.py), each against a count by hand, and the
engine's flops_per_step and mfu."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data.batches import epoch_batches, stacked
from jaxdl.models.cnn import MyNet
from jaxdl.models.recurrent import GATES, RecurrentLM
from jaxdl.models.transformer import DecoderLM, training_flops_per_token
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step
from jaxdl.train.flops import UncountableLoop, _count, matmul_flops, matmul_flops_by_dtype, speed_note
from jaxdl.train.state import stack_states
from tests.train.test_loop import N, _data, _loss, _run

KEY = jax.random.key(0)


def _forward(model: nn.Module, *inputs):
    """(params, the model's forward FLOPs on `inputs`)."""
    params = model.init(KEY, *inputs)
    return params, matmul_flops(model.apply, params, *inputs)


def test_dense_and_mlp():
    B, D_in, D_h, D_out = 7, 5, 11, 3
    x = jnp.ones((B, D_in))
    assert _forward(nn.Dense(D_out), x)[1] == 2 * B * D_in * D_out
    mlp = nn.Sequential([nn.Dense(D_h), nn.relu, nn.Dense(D_h), nn.relu, nn.Dense(D_out)])
    assert _forward(mlp, x)[1] == 2 * B * (D_in * D_h + D_h * D_h + D_h * D_out)


def test_matmul_batch_and_contracting_dims():
    # einsum 'bij,bjk->bik': batch b, contracting j, free i and k
    a, b = jnp.ones((4, 3, 5)), jnp.ones((4, 5, 6))
    assert matmul_flops(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), a, b) == 2 * 4 * 3 * 5 * 6
    # contracting over two axes at once: (i, j, k) x (j, k, l)
    a, b = jnp.ones((2, 3, 4)), jnp.ones((3, 4, 5))
    assert matmul_flops(lambda a, b: jnp.einsum("ijk,jkl->il", a, b), a, b) == 2 * 2 * 3 * 4 * 5


@pytest.mark.parametrize("strides,groups", [((1, 1), 1), ((2, 2), 1), ((1, 1), 2)])
def test_conv_matches_the_closed_form_and_so_does_its_weight_gradient(strides, groups):
    B, H, W, k, C_in, C_out = 2, 8, 6, 3, 4, 6
    conv = nn.Conv(C_out, (k, k), strides=strides, padding="SAME", feature_group_count=groups)
    x = jnp.ones((B, H, W, C_in))
    params, forward = _forward(conv, x)
    H_out, W_out = H // strides[0], W // strides[1]
    assert forward == 2 * H_out * W_out * k * k * (C_in // groups) * C_out * B
    # the kernel's gradient is a convolution too (batch-grouped for a grouped conv), and so is the
    # input's (input-dilated for a strided conv, its inserted zeros not counted): a forward's FLOPs each
    kernel_grad = jax.grad(lambda p: conv.apply(p, x).sum())
    assert matmul_flops(kernel_grad, params) == 2 * forward  # its forward and the kernel's gradient
    both_grads = jax.grad(lambda p, x: conv.apply(p, x).sum(), argnums=(0, 1))
    assert matmul_flops(both_grads, params, x) == 3 * forward


def test_mynet_forward_is_a_third_of_the_readme_training_figure():
    net = MyNet()
    x = net.example_input(2)
    _, forward = _forward(net, x)
    S = 48  # docs/speed.md: "578 MFLOP per image per step" = 3 x the forward of the convs and dense layers
    by_hand = 2 * (S * S * 27 * 32 + S * S * 288 * 64 + (S // 2) ** 2 * 576 * 128 + (S // 4) ** 2 * 128 * 512
                   + 512 * 10)
    assert forward / 2 == by_hand == pytest.approx(578e6 / 3, rel=1e-3)


def test_mynet_training_step_skips_the_image_gradient():
    """A training step is the forward, the weight gradients (one forward's worth) and the input
    gradients (another) except the first conv's, which nothing needs: the image is not trained."""
    net = MyNet()
    x, y = net.example_input(2), jnp.zeros((2,), jnp.int32)
    params, forward = _forward(net, x)

    def loss(params, batch, rng):
        logits = net.apply(params, batch["x"], train=True, rngs={"dropout": rng})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, {"loss": loss}

    opt = make_optimizer("adam", 1e-3, 1e-4)
    step = make_train_step(loss, opt, jit=False)
    conv1 = 2 * 2 * 48 * 48 * 27 * 32  # batch 2
    assert matmul_flops(step, TrainState.create(params, opt, 0), {"x": x, "y": y}) == 3 * forward - conv1


def test_scan_counts_its_body_length_times():
    w, h = jnp.ones((6, 6)), jnp.ones((3, 6))
    body = lambda h, _: (jnp.tanh(h @ w), None)
    assert matmul_flops(lambda h: jax.lax.scan(body, h, None, length=9)[0], h) == 9 * 2 * 3 * 6 * 6
    # fori_loop with static bounds is a scan, so it counts exactly too
    assert matmul_flops(lambda h: jax.lax.fori_loop(0, 4, lambda i, h: h @ w, h), h) == 4 * 2 * 3 * 6 * 6


def test_cond_counts_its_costliest_branch_and_a_while_of_matmuls_refuses():
    w, h = jnp.ones((6, 6)), jnp.ones((3, 6))
    branchy = lambda h: jax.lax.cond(h.sum() > 0, lambda h: h @ w @ w, lambda h: h @ w, h)
    assert matmul_flops(branchy, h) == 2 * 2 * 3 * 6 * 6
    loop = lambda h: jax.lax.while_loop(lambda c: c[0] < c[1].sum(), lambda c: (c[0] + 1, c[1] @ w), (0, h))
    with pytest.raises(UncountableLoop):
        matmul_flops(loop, h)
    counter = lambda h: jax.lax.while_loop(lambda i: i < 5, lambda i: i + 1, 0) * (h @ w)  # no matmul inside
    assert matmul_flops(counter, h) == 2 * 3 * 6 * 6


def test_gradient_of_a_dense_layer():
    """The weight gradient x^T dy costs one forward; the input gradient dy W^T another, only when asked."""
    B, D_in, D_out = 7, 5, 3
    dense, x = nn.Dense(D_out), jnp.ones((B, D_in))
    params, forward = _forward(dense, x)
    loss = lambda p, x: dense.apply(p, x).sum()
    assert matmul_flops(jax.grad(loss), params, x) == 2 * forward  # bias gradient: a sum, not a matmul
    assert matmul_flops(jax.value_and_grad(loss), params, x) == 2 * forward  # forward + weight gradient
    assert matmul_flops(jax.grad(loss, argnums=(0, 1)), params, x) == 3 * forward


def test_flops_by_dtype_and_shape_structs():
    dense, x = nn.Dense(4, dtype=jnp.bfloat16), jax.ShapeDtypeStruct((3, 5), jnp.float32)
    params = jax.eval_shape(dense.init, KEY, x)
    assert matmul_flops_by_dtype(dense.apply, params, x) == {"bfloat16": 2 * 3 * 5 * 4}


def _decoder_lm(**kw):
    """(forward FLOPs per token, training FLOPs per token, training_flops_per_token) of a small DecoderLM."""
    L, D, T, B, V = 2, 32, 16, 3, 50
    lm = DecoderLM(V, num_layers=L, d_model=D, num_heads=4, max_len=T, **kw)
    tokens = jnp.zeros((B, T), jnp.int32)
    params = lm.init(KEY, tokens)
    forward = matmul_flops(lambda p, t: lm.apply(p, t)[0], params, tokens) / (B * T)

    def loss(params, tokens):
        logits = lm.apply(params, tokens)[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()
    training = matmul_flops(jax.grad(loss), params, tokens) / (B * T)
    return forward, training, training_flops_per_token(params, L, T, D)


@pytest.mark.parametrize("kw", [{}, {"pos": "rope", "norm": "rms", "num_kv_heads": 1}, {"tie_embeddings": True},
                                {"scan": False}])
def test_decoder_lm_matches_training_flops_per_token(kw):
    """training_flops_per_token is PaLM's estimate 6 N + 12 L T D (N: the weight matrices), and the
    count agrees exactly, not just within a tolerance: a forward is 2 N + 4 L T D per token (the T x T
    scores and weighted values with the causal mask's zeros, which XLA computes and the convention
    counts), and a training step is 3 forwards: even the first block's input gradient is computed,
    for the token embedding. (The estimate would differ for a model with other matmuls than weight
    x activation and attention, or whose first matmul's input needs no gradient.)"""
    forward, training, estimate = _decoder_lm(**kw)
    assert forward == estimate / 3 and training == estimate


def test_remat_recomputation_is_counted():
    """Not model FLOPs in PaLM's sense: a rematerialised block's forward runs twice and counts twice
    (only what its backward needs: here all but the MLP's output projection: 2 x 8 D^2 + 4 T D per layer and token)."""
    forward, training, estimate = _decoder_lm(scan=False, remat=True)
    L, D, T = 2, 32, 16
    assert forward == estimate / 3 and training == estimate + L * (2 * 8 * D * D + 4 * T * D)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent_lm_scanned_over_time(cell):
    """Per token and layer, gates x H x (input + H) multiply-adds, plus the head. Its backward
    (the custom VJP in recurrence) is two forwards' worth plus each layer's two bias gradients,
    which it computes as matmuls with a row of ones (faster on XLA:CPU than a reduction)."""
    V, E, H, layers, B, T = 40, 8, 16, 2, 3, 10
    lm = RecurrentLM(V, cell, embed=E, hidden=H, layers=layers)
    tokens = jnp.zeros((B, T), jnp.int32)
    params = lm.init(KEY, tokens)
    G = GATES[cell] * H
    per_token = 2 * G * (E + H) + 2 * G * (H + H) * (layers - 1) + 2 * H * V
    assert matmul_flops(lambda p, t: lm.apply(p, t)[0], params, tokens) == per_token * B * T
    loss = lambda p, t: lm.apply(p, t)[0].sum()
    bias_rows = layers * 2 * (2 * B * T * G)
    assert matmul_flops(jax.grad(loss), params, tokens) == 3 * per_token * B * T + bias_rows


def test_fused_attention_counts_as_xla_attention():
    """cuDNN's fused attention (GPU only, so faked here: its primitives as jax binds them) against
    XLA's attention of the same shapes: the forward's QK^T and PV, and a backward of twice that."""
    B, T, S, heads, kv_heads, width = 2, 8, 8, 4, 2, 16
    q, k = jnp.ones((B, T, heads, width)), jnp.ones((B, S, kv_heads, width))
    attend = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    xla_forward = matmul_flops(attend, q, k, k)
    xla_both = matmul_flops(jax.grad(lambda q, k, v: attend(q, k, v).sum(), argnums=(0, 1, 2)), q, k, k)
    assert xla_forward == 4 * B * T * S * heads * width and xla_both == 3 * xla_forward

    def fake(name, layout, q_shape, k_shape):
        var = lambda shape: types.SimpleNamespace(aval=jax.ShapeDtypeStruct(shape, jnp.bfloat16))
        eqn = types.SimpleNamespace(primitive=types.SimpleNamespace(name=name), params={"layout": layout},
                                    invars=[var(q_shape), var(k_shape), var(k_shape)])
        return sum(_count(types.SimpleNamespace(eqns=[eqn])).values())
    for layout, qs, ks in [(0, q.shape, k.shape), (1, (B, heads, T, width), (B, kv_heads, S, width))]:
        assert fake("dot_product_attention_fwd_wrapper", layout, qs, ks) == xla_forward
        assert fake("dot_product_attention_bwd_wrapper", layout, qs, ks) == xla_both - xla_forward


def test_vmapped_models_count_every_model():
    params = {"w": jnp.zeros((5,)), "b": jnp.zeros(())}
    opt = make_optimizer("adam", 0.05, 0.0)
    batch = {k: v[:16] for k, v in _data().items()}
    one = matmul_flops(make_train_step(_loss, opt, jit=False), TrainState.create(params, opt, 0), batch)
    three = matmul_flops(make_train_step(_loss, opt, many=True, jit=False),
                         stack_states([TrainState.create(params, opt, s) for s in range(3)]),
                         jax.tree.map(lambda a: np.stack([a] * 3), batch))
    assert one == 2 * (2 * 16 * 5) and three == 3 * one  # x @ w and its weight gradient (x needs none)


def test_fit_reports_the_step_flops_and_mfu(tmp_path):
    result = _run(tmp_path, 1)
    assert result.flops_per_step == 2 * (2 * 16 * 5) and result.flops_per_example == 2 * 2 * 5
    assert result.matmul_peak_gflops > 0 and 0 < result.mfu < float("inf")
    # the same steps, seconds and examples as train_examples_per_sec
    achieved = result.flops_per_example * result.train_examples_per_sec
    assert result.mfu == pytest.approx(achieved / (result.matmul_peak_gflops * 1e9), rel=1e-9)
    rerun = _run(tmp_path, 1)  # nothing left to train: nothing measured
    assert (rerun.flops_per_step, rerun.mfu, rerun.matmul_peak_gflops) == (None, None, None)


def test_fit_with_many_models_counts_per_model_example(tmp_path):
    data, opt = _data(), make_optimizer("adam", 0.05, 0.0)
    params = {"w": jnp.zeros((5,)), "b": jnp.zeros(())}
    state = stack_states([TrainState.create(params, opt, s) for s in range(2)])
    batches = stacked([epoch_batches(data, 16, 0)] * 2)
    cfg = TrainConfig(epochs=1, batch_size=16, workdir=str(tmp_path))
    result = fit(state, make_train_step(_loss, opt, many=True), batches, N // 16,
                 lambda p: {"loss": 0.0}, cfg, many=True)
    assert result.flops_per_step == 2 * 2 * (2 * 16 * 5) and result.flops_per_example == 2 * 2 * 5
    assert result.mfu > 0


def test_a_step_that_cannot_be_counted_still_trains(tmp_path, capsys):
    opt = make_optimizer("adam", 0.05, 0.0)
    jitted = make_train_step(_loss, opt)

    def step(state, batch):
        float(batch["x"][0, 0])  # fine on arrays, impossible while tracing
        return jitted(state, batch)

    cfg = TrainConfig(epochs=1, batch_size=16, workdir=str(tmp_path))
    params = {"w": jnp.zeros((5,)), "b": jnp.zeros(())}
    result = fit(TrainState.create(params, opt, 0), step, epoch_batches(_data(), 16, 0),
                 N // 16, lambda p: {"loss": 0.0}, cfg)
    assert result.steps == N // 16 and result.train_examples_per_sec > 0
    assert (result.flops_per_step, result.flops_per_example, result.mfu) == (None, None, None)
    assert "Model FLOPs not counted" in capsys.readouterr().out


def test_speed_note():
    assert speed_note(1234.4, "examples", 0.2345) == " (training: 1,234 examples/s, MFU 23.4%)"
    assert speed_note(10.0, "tokens", None) == " (training: 10 tokens/s)"
    assert speed_note(10.0, "examples", 1.56e-5) == " (training: 10 examples/s, MFU 0.0016%)"
    assert speed_note(None, "images", 0.5) == ""
