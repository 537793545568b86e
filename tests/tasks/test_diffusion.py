"""Diffusion arithmetic: schedules, the closed-form forward process, loss weights, guidance and samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.tasks.diffusion import (cosine_alpha_bar, cosine_schedule, ddim_sample, ddim_step, ddim_timesteps,
                                   ddpm_sample, ddpm_step, guided, linear_schedule, loss_weights, make_schedule,
                                   q_sample)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedules_are_monotone_with_the_right_end_points(name):
    s = make_schedule(name, 1000)
    betas, ab = np.asarray(s.betas, np.float64), np.asarray(s.alpha_bars, np.float64)
    assert betas.shape == ab.shape == (1000,)
    assert np.all(np.diff(betas) >= 0) and np.all((betas > 0) & (betas <= 0.999 + 1e-6))
    assert np.all(np.diff(ab) < 0)
    assert ab[0] > 0.999 and ab[-1] < 1e-3  # starts at (almost) the data, ends at (almost) pure noise
    np.testing.assert_allclose(ab, np.cumprod(1 - betas), rtol=1e-4)  # float32 betas


def test_linear_schedule_end_points_are_the_papers():
    betas = np.asarray(linear_schedule(1000).betas)
    np.testing.assert_allclose([betas[0], betas[-1]], [1e-4, 0.02], rtol=1e-6)


def test_cosine_schedule_matches_its_formula():
    T, s = 1000, 0.008
    ab = np.asarray(cosine_schedule(T, s).alpha_bars, np.float64)
    t = np.arange(1, T + 1)
    want = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2 / np.cos(s / (1 + s) * np.pi / 2) ** 2
    unclipped = t < T - 20  # the paper clips beta at 0.999, which only bites in the last steps
    np.testing.assert_allclose(ab[unclipped], want[unclipped], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(cosine_alpha_bar(np.array([0.0]), s), np.cos(s / (1 + s) * np.pi / 2) ** 2)


def test_q_sample_matches_iterating_the_one_step_chain():
    """x_t from t+1 single steps x_{k} = sqrt(1 - beta_k) x_{k-1} + sqrt(beta_k) z has the closed form's
    mean and variance (100,000 chains; tolerance a few standard errors)."""
    sched = linear_schedule(1000)
    t = 300
    x0 = jnp.array([-1.0, 0.0, 0.7])
    n = 100_000
    keys = jax.random.split(jax.random.key(0), t + 1)

    def one_step(x, kb):
        k, beta = kb
        return jnp.sqrt(1 - beta) * x + jnp.sqrt(beta) * jax.random.normal(k, x.shape), None

    chain, _ = jax.lax.scan(one_step, jnp.broadcast_to(x0, (n, 3)), (keys, sched.betas[:t + 1]))
    closed = q_sample(sched, jnp.broadcast_to(x0, (n, 3)), jnp.full((n,), t), jax.random.normal(jax.random.key(1), (n, 3)))
    ab = float(sched.alpha_bars[t])
    for x in (chain, closed):
        mean, var = np.asarray(x.mean(0)), np.asarray(x.var(0))
        np.testing.assert_allclose(mean, np.sqrt(ab) * np.asarray(x0), atol=4 * np.sqrt((1 - ab) / n))
        np.testing.assert_allclose(var, 1 - ab, rtol=0.02)


def test_min_snr_weights():
    sched = cosine_schedule(1000)
    t = jnp.array([0, 100, 500, 999])
    snr = np.asarray(sched.alpha_bars[t] / (1 - sched.alpha_bars[t]), np.float64)
    np.testing.assert_allclose(loss_weights(sched, t, 5.0), np.minimum(snr, 5.0) / snr, rtol=1e-5)
    np.testing.assert_array_equal(loss_weights(sched, t, 0.0), np.ones(4))


def test_guidance_weight_zero_is_the_conditional_prediction():
    c, u = jax.random.normal(jax.random.key(0), (2, 4, 8, 8, 1))
    np.testing.assert_array_equal(guided(c, u, 0.0), c)
    np.testing.assert_allclose(guided(c, u, 2.0), c + 2.0 * (c - u), rtol=1e-6, atol=1e-6)


def test_ddim_timesteps():
    np.testing.assert_array_equal(ddim_timesteps(1000, 1000), np.arange(999, -1, -1))
    ts = ddim_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="1..1000"):
            ddim_timesteps(1000, bad)


def _float64(sched):
    betas = sched.betas.astype(jnp.float64)
    return sched.replace(betas=betas, alpha_bars=jnp.cumprod(1 - betas))


def test_ddim_with_eta_1_and_every_step_is_the_ddpm_update():
    with jax.enable_x64(True):
        sched = _float64(linear_schedule(1000))
        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(k1, (5, 4, 4, 1), jnp.float64)
        eps = jax.random.normal(k2, x.shape, jnp.float64)
        z = jax.random.normal(k3, x.shape, jnp.float64)
        for t in (999, 500, 10, 1, 0):
            for clip in (None, 1.0):
                t = jnp.int32(t)
                np.testing.assert_allclose(ddim_step(sched, x, t, t - 1, eps, z, eta=1.0, clip=clip),
                                           ddpm_step(sched, x, t, eps, z, clip=clip), rtol=1e-10, atol=1e-10)


def _linear_eps_fn(x, t):  # some fixed, t-dependent "network"
    return 0.5 * jnp.tanh(x) + 0.001 * t[:, None, None, None]


def test_ddpm_and_ddim_full_samplers_agree_and_are_deterministic():
    sched = linear_schedule(100)
    x_T = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
    key = jax.random.key(1)
    ddpm = jax.jit(lambda x, k: ddpm_sample(_linear_eps_fn, sched, x, k, clip=1.0))
    a, b = ddpm(x_T, key), ddpm(x_T, key)
    np.testing.assert_array_equal(a, b)  # same key: same images
    assert not np.allclose(a, ddpm(x_T, jax.random.key(2)))  # another key: others
    ddim = ddim_sample(_linear_eps_fn, sched, x_T, key, num_steps=100, eta=1.0, clip=1.0)
    np.testing.assert_allclose(ddim, a, atol=2e-4)  # the same updates with the same noise (float32)


def test_ddim_with_the_true_noise_recovers_x0_exactly():
    """An oracle denoiser (returns the noise that makes x_t from x_0) makes deterministic DDIM land on x_0
    (float64: at t = T-1 alpha_bar is ~1e-9, and float32 loses digits dividing by its root)."""
    with jax.enable_x64(True):
        sched = _float64(cosine_schedule(1000))
        x0 = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1), jnp.float64, minval=-1, maxval=1)

        def oracle(x_t, t_B):
            ab = sched.alpha_bars[t_B][:, None, None, None]
            return (x_t - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)

        for steps, eta in ((1, 0.0), (7, 0.0), (50, 0.0), (50, 1.0)):  # with noise too: each x_0 estimate is exact
            x_T = jax.random.normal(jax.random.key(steps), x0.shape, jnp.float64)
            out = ddim_sample(oracle, sched, x_T, jax.random.key(0), steps, eta=eta)
            np.testing.assert_allclose(out, x0, atol=1e-9)
