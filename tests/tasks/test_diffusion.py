"""Diffusion arithmetic: schedules, the closed-form forward process, loss weights, guidance and samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.tasks.diffusion import (cosine_alpha_bar, cosine_schedule, ddim_sample, ddim_step, ddim_timesteps,
                                   ddpm_sample, ddpm_step, guided, linear_schedule, loss_weights, make_schedule,
                                   q_sample)
from tests.conftest import OPTIMISED


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
    mean and variance (50,000 chains; tolerances 4 and 5 standard errors)."""
    sched = linear_schedule(1000)
    t = 300
    x0 = jnp.array([-1.0, 0.0, 0.7])
    n = 50_000
    keys = jax.random.split(jax.random.key(0), t + 1)

    def one_step(x, kb):
        k, beta = kb
        return jnp.sqrt(1 - beta) * x + jnp.sqrt(beta) * jax.random.normal(k, x.shape), None

    # 45M normal draws: compiled with XLA's optimisation on, whatever the suite's XLA_FLAGS say
    run = jax.jit(lambda x, kb: jax.lax.scan(one_step, x, kb)[0], compiler_options=OPTIMISED)
    chain = run(jnp.broadcast_to(x0, (n, 3)), (keys, sched.betas[:t + 1]))
    closed = q_sample(sched, jnp.broadcast_to(x0, (n, 3)), jnp.full((n,), t), jax.random.normal(jax.random.key(1), (n, 3)))
    ab = float(sched.alpha_bars[t])
    for x in (chain, closed):
        mean, var = np.asarray(x.mean(0)), np.asarray(x.var(0))
        np.testing.assert_allclose(mean, np.sqrt(ab) * np.asarray(x0), atol=4 * np.sqrt((1 - ab) / n))
        np.testing.assert_allclose(var, 1 - ab, rtol=5 * np.sqrt(2 / n))  # var's SE: sqrt(2/n) of it


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


# DDIM against Song et al. (2021), eq. 12, written out here in float64 numpy with alpha_bar from the betas:
#   x_s = sqrt(a_s) x0_hat + sqrt(1 - a_s - sigma^2) eps_hat + sigma z,  x0_hat = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t)
#   sigma = eta sqrt((1 - a_s) / (1 - a_t)) sqrt(1 - a_t / a_s)                                            (eq. 16)
# with an imperfect eps_hat (the true noise plus a fixed offset), which every coefficient then shows in x_s.

def _np_alpha_bar(betas, t):
    return 1.0 if t < 0 else float(np.prod(1 - np.asarray(betas, np.float64)[:t + 1]))


def _np_ddim(betas, x_t, t, s, eps_hat, z, eta):
    a_t, a_s = _np_alpha_bar(betas, t), _np_alpha_bar(betas, s)
    x0_hat = (x_t - np.sqrt(1 - a_t) * eps_hat) / np.sqrt(a_t)
    sigma = eta * np.sqrt((1 - a_s) / (1 - a_t)) * np.sqrt(1 - a_t / a_s)
    return np.sqrt(a_s) * x0_hat + np.sqrt(1 - a_s - sigma ** 2) * eps_hat + sigma * z


STEPS = [(999, 998), (500, 499), (10, 9), (1, 0), (0, -1),  # one step each
         (700, 450), (300, 40), (60, -1)]  # jumps of several steps, the last to the data


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_one_ddim_update_is_eq_12_with_an_imperfect_noise_prediction(eta):
    """float64 both sides; rtol = atol = 1e-10 (round-off only; x_t is O(1), 1/sqrt(a_t) <= 160 here)."""
    rng = np.random.default_rng(0)
    x0, eps, offset, z = (rng.normal(size=(3, 4, 4, 1)) for _ in range(4))
    with jax.enable_x64(True):
        sched = _float64(linear_schedule(1000))
        betas = np.asarray(linear_schedule(1000).betas, np.float64)
        step = jax.jit(ddim_step)
        for t, s in STEPS:
            a_t = _np_alpha_bar(betas, t)
            x_t = np.sqrt(a_t) * x0 + np.sqrt(1 - a_t) * eps
            eps_hat = eps + 0.5 * offset  # imperfect: x0_hat is off by 0.5 sqrt(1 - a_t) / sqrt(a_t) * offset
            got = np.asarray(step(sched, x_t, jnp.int32(t), jnp.int32(s), eps_hat, z, eta))
            np.testing.assert_allclose(got, _np_ddim(betas, x_t, t, s, eps_hat, z, eta), rtol=1e-10, atol=1e-10,
                                       err_msg=f"t={t} s={s} eta={eta}")
            if eta == 0.0:  # deterministic: z plays no part
                np.testing.assert_array_equal(step(sched, x_t, jnp.int32(t), jnp.int32(s), eps_hat, -z, eta), got)
            # the prediction's error reaches the update: the true noise would give another x_s
            exact = _np_ddim(betas, x_t, t, s, eps, z, eta)
            assert np.max(np.abs(got - exact)) > 1e-3, (t, s, eta)


def test_ddim_with_eta_1_has_the_ddpm_posterior_variance():
    """sigma_t, read off as the coefficient of z (the update is linear in z), squared, is
    beta_tilde_t = (1 - a_{t-1}) / (1 - a_t) * (1 - a_t / a_{t-1}) (Ho et al. 2020, eq. 7), float64 from the
    betas; rtol 1e-9 (sigma >= 7e-3 here, a difference of two updates whose x0_hat is at most ~500: round-off ~1e-13)."""
    rng = np.random.default_rng(1)
    x_t, eps_hat = rng.normal(size=(2, 8))
    with jax.enable_x64(True):
        sched = _float64(linear_schedule(1000))
        betas = np.asarray(linear_schedule(1000).betas, np.float64)
        step = jax.jit(ddim_step)
        for t in (999, 500, 100, 10, 1):
            a_t, a_prev = _np_alpha_bar(betas, t), _np_alpha_bar(betas, t - 1)
            want = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
            np.testing.assert_allclose(want, (1 - a_prev) / (1 - a_t) * betas[t], rtol=1e-12)  # 1 - a_t/a_{t-1} = beta_t
            ones, zeros = np.ones_like(x_t), np.zeros_like(x_t)
            sigma = np.asarray(step(sched, x_t, jnp.int32(t), jnp.int32(t - 1), eps_hat, ones, 1.0)
                               - step(sched, x_t, jnp.int32(t), jnp.int32(t - 1), eps_hat, zeros, 1.0))
            np.testing.assert_allclose(sigma ** 2, np.full_like(x_t, want), rtol=1e-9, err_msg=f"t={t}")


def test_ddim_sampler_is_eq_12_over_its_jumps_with_the_noise_of_its_key():
    """ddim_sample through 6 of 100 steps with an imperfect, t-dependent "network", against eq. 12 in numpy
    over the same timesteps (99, 79, 59, 40, 20, 0, then the data), z_t = normal(fold_in(key, t)), for
    eta = 0 and 0.6 (float64; rtol = atol = 1e-9)."""
    T, num_steps = 100, 6
    offset = np.random.default_rng(2).normal(size=(2, 4, 4, 1))

    def eps_fn(x, t_B):
        return 0.5 * jnp.tanh(x) + 0.01 * t_B[:, None, None, None] + offset

    with jax.enable_x64(True):
        sched = _float64(linear_schedule(T))
        betas = np.asarray(linear_schedule(T).betas, np.float64)
        key = jax.random.key(3)
        x_T = np.random.default_rng(4).normal(size=offset.shape)
        sample = jax.jit(lambda x, eta: ddim_sample(eps_fn, sched, x, key, num_steps, eta=eta))  # one compile
        ts = [99, 79, 59, 40, 20, 0]
        np.testing.assert_array_equal(ddim_timesteps(T, num_steps), ts)
        zs = {t: np.asarray(jax.random.normal(jax.random.fold_in(key, t), x_T.shape, jnp.float64)) for t in ts}
        for eta in (0.0, 0.6):
            x = x_T
            for t, s in zip(ts, ts[1:] + [-1]):
                x = _np_ddim(betas, x, t, s, 0.5 * np.tanh(x) + 0.01 * t + offset, zs[t], eta)
            np.testing.assert_allclose(sample(jnp.asarray(x_T), eta), x, rtol=1e-9, atol=1e-9, err_msg=f"eta={eta}")
