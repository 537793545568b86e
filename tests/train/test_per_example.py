"""Per-example gradients and the DP-SGD gradient, each checked against a Python loop of `jax.grad` on batches
of one, and against numpy for the clipping, averaging and noise scale."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data.batches import epoch_batches
from jaxdl.errors import UsageError
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step
from jaxdl.train.per_example import per_example_grad_norms, per_example_grads, private_grad_fn

B, D_IN, D_HIDDEN, N_CLASSES = 8, 6, 16, 5


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x_BD):
        return nn.Dense(N_CLASSES)(jnp.tanh(nn.Dense(D_HIDDEN)(x_BD)))


def _mlp_loss(params, batch, rng):
    """Deterministic (ignores rng), so the loop reference needs no keys."""
    logits_BK = _MLP().apply(params, batch["x"])
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_BK, batch["y"]))
    return loss, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits_BK, -1) == batch["y"])}


def _data(seed=0):
    kx, ky, kp = jax.random.split(jax.random.key(seed), 3)
    # a spread of input scales, so per-example gradient norms differ widely (some clipped, some not)
    scale_B1 = jnp.linspace(0.2, 4.0, B)[:, None]
    batch = {"x": scale_B1 * jax.random.normal(kx, (B, D_IN)), "y": jax.random.randint(ky, (B,), 0, N_CLASSES)}
    return jax.jit(_MLP().init)(kp, batch["x"][:1]), batch  # jitted: eager flax init is slow op by op


_ref_grad = jax.jit(jax.grad(_mlp_loss, has_aux=True))


def _loop_grads(params, batch):
    """The reference: jax.grad on each example as a batch of one, in float64 numpy."""
    grads, metrics = [], []
    for i in range(B):
        g, m = _ref_grad(params, jax.tree.map(lambda x: x[i:i + 1], batch), jax.random.key(0))
        grads.append(jax.tree.map(lambda a: np.asarray(a, np.float64), g))
        metrics.append({k: float(v) for k, v in m.items()})
    return grads, metrics


def _norm(tree):
    return float(np.sqrt(sum(np.sum(a ** 2) for a in jax.tree.leaves(tree))))


def _clip_threshold(norms):
    """A clip norm halfway between two sorted norms: half the examples are clipped, none sits on the edge."""
    s = np.sort(norms)
    return float((s[B // 2 - 1] + s[B // 2]) / 2)


def test_per_example_grads_and_norms_match_a_loop_of_grads_on_batches_of_one():
    params, batch = _data()
    grads_B, metrics_B = jax.jit(per_example_grads, static_argnums=0)(_mlp_loss, params, batch, jax.random.key(1))
    loop, loop_metrics = _loop_grads(params, batch)
    for i in range(B):
        got = jax.tree.map(lambda a: np.asarray(a[i]), grads_B)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, loop[i])  # float32, entries ~1
        assert float(metrics_B["loss"][i]) == pytest.approx(loop_metrics[i]["loss"], rel=1e-5)
    norms_B = jax.jit(per_example_grad_norms, static_argnums=0)(_mlp_loss, params, batch, jax.random.key(1))
    assert norms_B.shape == (B,)
    np.testing.assert_allclose(norms_B, [_norm(g) for g in loop], rtol=1e-5)


def test_private_grad_without_noise_is_the_mean_of_hand_clipped_loop_grads():
    params, batch = _data()
    loop, loop_metrics = _loop_grads(params, batch)
    norms = np.array([_norm(g) for g in loop])
    clip = _clip_threshold(norms)
    scales = np.minimum(1.0, clip / norms)
    assert 0 < np.sum(scales < 1) < B  # the check covers both sides of the clip
    want = jax.tree.map(lambda *gs: sum(s * g for s, g in zip(scales, gs)) / B, *loop)

    grads, metrics = jax.jit(private_grad_fn(_mlp_loss, clip, 0.0))(params, batch, jax.random.key(3))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, want)
    assert float(metrics["clipped"]) == pytest.approx(np.mean(scales < 1))
    assert float(metrics["grad_norm"]) == pytest.approx(norms.mean(), rel=1e-5)
    assert float(metrics["loss"]) == pytest.approx(np.mean([m["loss"] for m in loop_metrics]), rel=1e-5)
    assert float(metrics["accuracy"]) == pytest.approx(np.mean([m["accuracy"] for m in loop_metrics]))


def test_a_private_train_step_matches_a_manual_clipped_sgd_update():
    params, batch = _data()
    lr = 0.5
    loop, _ = _loop_grads(params, batch)
    norms = np.array([_norm(g) for g in loop])
    clip = _clip_threshold(norms)
    scales = np.minimum(1.0, clip / norms)
    want = jax.tree.map(lambda p, *gs: np.asarray(p, np.float64) - lr * sum(s * g for s, g in zip(scales, gs)) / B,
                        params, *loop)

    optimizer = optax.sgd(lr)
    state = TrainState.create(jax.tree.map(jnp.copy, params), optimizer, 0)  # the step donates its state
    step = make_train_step(_mlp_loss, optimizer, grad_fn=private_grad_fn(_mlp_loss, clip, 0.0))
    state, metrics = step(state, batch)
    assert int(state.step) == 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state.params, want)
    assert float(metrics["clipped"]) == pytest.approx(np.mean(scales < 1))


def _linear_loss(params, batch, rng):
    """Example i's gradient is (x_i, 1): known exactly, over enough coordinates to measure the noise's spread."""
    loss = jnp.sum(params["w"] * batch["x"]) + jnp.sum(params["b"]) * batch["x"].shape[0]
    return loss, {"loss": loss}


def test_noise_has_scale_sigma_times_clip_over_b_and_comes_from_the_key():
    batch_size, clip, sigma = 4, 0.3, 1.7
    params = {"w": jnp.zeros((64, 128)), "b": jnp.zeros((128,))}  # 8,320 coordinates
    batch = {"x": jax.random.normal(jax.random.key(5), (batch_size, 64, 128))}
    noisy = jax.jit(private_grad_fn(_linear_loss, clip, sigma))
    noiseless = jax.jit(private_grad_fn(_linear_loss, clip, 0.0))
    k1, k2 = jax.random.key(11), jax.random.key(12)

    base, _ = noiseless(params, batch, k1)
    g1, m1 = noisy(params, batch, k1)
    assert float(m1["clipped"]) == 1.0  # every |x_i| >> 0.3: each example contributes exactly norm `clip`
    noise = np.concatenate([(np.asarray(g1[k]) - np.asarray(base[k])).ravel() * batch_size for k in ("w", "b")])
    assert abs(noise.mean()) < 0.05 * sigma * clip  # ~5 standard errors
    assert noise.std() == pytest.approx(sigma * clip, rel=0.04)  # std error ~0.8%
    # each leaf draws its own noise, not a copy of another leaf's
    assert not np.allclose(g1["b"] - base["b"], (g1["w"] - base["w"])[0])

    again, _ = noisy(params, batch, k1)
    other, _ = noisy(params, batch, k2)
    jax.tree.map(np.testing.assert_array_equal, again, g1)
    assert not np.allclose(other["w"], g1["w"])


def _keyed_loss(params, batch, rng):
    """Its value depends on the key (like dropout); reports the key's draw and the batch size it was shown."""
    u = jax.random.uniform(rng)
    loss = u * jnp.sum(params["w"] * batch["x"])
    return loss, {"u": u, "rows": jnp.float32(batch["x"].shape[0])}


def test_each_example_gets_its_own_key_and_is_shown_as_a_batch_of_one():
    params, rng = {"w": jnp.ones(3)}, jax.random.key(7)
    batch = {"x": jnp.ones((B, 3))}  # identical examples: only the keys can tell them apart
    grads_B, metrics_B = per_example_grads(_keyed_loss, params, batch, rng)
    u_B = np.asarray(metrics_B["u"])
    assert len(np.unique(u_B)) == B
    np.testing.assert_allclose(u_B, [jax.random.uniform(jax.random.fold_in(rng, i)) for i in range(B)])
    np.testing.assert_allclose(grads_B["w"], np.repeat(u_B[:, None], 3, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(metrics_B["rows"], np.ones(B))


@pytest.mark.parametrize("clip, sigma", [(0.0, 1.0), (-1.0, 1.0), (float("inf"), 1.0), (float("nan"), 1.0),
                                         (1.0, -0.1), (1.0, float("inf")), ("big", 1.0)])
def test_bad_arguments_stop_with_one_line(clip, sigma):
    with pytest.raises(UsageError) as info:
        private_grad_fn(_linear_loss, clip, sigma)
    assert "\n" not in str(info.value)


def test_a_batch_without_a_shared_example_axis_stops_with_one_line():
    params, batch = {"w": jnp.ones(3)}, {"x": jnp.ones((4, 3)), "y": jnp.ones((5,))}
    with pytest.raises(UsageError, match="leading example axis"):
        per_example_grads(_keyed_loss, params, batch, jax.random.key(0))


def test_fit_takes_the_private_step_from_the_config(tmp_path):
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(32, 3)).astype(np.float32), "y": rng.normal(size=(32,)).astype(np.float32)}

    def loss(params, batch, key):
        value = jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
        return value, {"loss": value}

    cfg = TrainConfig(epochs=1, batch_size=8, workdir=str(tmp_path), dp_clip=0.01, dp_noise=0.0, log_every=1)
    opt = make_optimizer("sgd", 0.1, 0.0, momentum=0.0)
    result = fit(TrainState.create({"w": jnp.ones((3,))}, opt, 0), make_train_step(loss, opt),
                 epoch_batches(data, 8, 0), 4, lambda p: {"loss": 0.0}, cfg)
    train = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert train["clipped"] == 1.0 and train["grad_norm"] > 0.01  # every example clipped to 0.01
    # each step moves w by at most lr x clip: 4 steps, 0.1 x 0.01 each
    assert float(jnp.linalg.norm(result.state.params["w"] - 1.0)) <= 4 * 0.1 * 0.01 + 1e-6
    with pytest.raises(UsageError, match="--dp-clip needs gradients by jax.grad"):
        fit(TrainState.create({"w": jnp.ones((3,))}, opt, 0), make_train_step(loss, opt, grad_fn=jax.grad(loss, has_aux=True)),
            epoch_batches(data, 8, 0), 4, lambda p: {"loss": 0.0},
            TrainConfig(epochs=2, batch_size=8, workdir=str(tmp_path / "b"), dp_clip=1.0))
