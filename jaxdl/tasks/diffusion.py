"""Diffusion arithmetic, whatever the network: noise schedules, the forward process, the
epsilon-prediction loss weights, classifier-free guidance, and the DDPM and DDIM samplers.

Timesteps are 0..T-1; alpha_bar[t] = prod_{s <= t} (1 - beta[s]), and alpha_bar before step 0 is 1.

    forward    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)            (Ho et al. 2020, eq. 4)
    DDPM       x_{t-1} = posterior mean(x_0_hat, x_t) + sqrt(beta_tilde_t) z          (eq. 6-7, 11)
    DDIM       x_s = sqrt(ab_s) x_0_hat + sqrt(1 - ab_s - sigma^2) eps + sigma z,
               sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s)         (Song et al. 2021, eq. 12, 16)
    guidance   eps = (1 + w) eps(x, c) - w eps(x, null)                               (Ho & Salimans 2022)
    min-SNR    loss weight min(SNR_t, gamma) / SNR_t for epsilon prediction           (Hang et al. 2023)

Samplers take `eps_fn(x_t, t_B) -> eps` and are one `lax.scan` over the steps. With `clip`, the
predicted x_0 is clipped to [-clip, clip] and eps recomputed from it, so DDPM and DDIM (eta = 1,
every step) stay the same update. Step t's noise comes from fold_in(key, t) in both samplers.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")
EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


class Schedule(struct.PyTreeNode):
    betas: jax.Array  # (T,) float32
    alpha_bars: jax.Array  # (T,) cumulative products of 1 - beta

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    def alpha_bar(self, t: jax.Array) -> jax.Array:
        """alpha_bar[t], with alpha_bar[-1] = 1 (before any noise)."""
        return jnp.where(t >= 0, self.alpha_bars[jnp.maximum(t, 0)], 1.0)

    def snr(self, t: jax.Array) -> jax.Array:
        ab = self.alpha_bars[t]
        return ab / (1 - ab)


def _schedule(betas: np.ndarray) -> Schedule:
    return Schedule(betas=jnp.asarray(betas, jnp.float32), alpha_bars=jnp.asarray(np.cumprod(1 - betas), jnp.float32))


def linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Ho et al. (2020): betas evenly spaced from 1e-4 to 0.02 over 1,000 steps (scaled for other T)."""
    scale = 1000 / num_timesteps
    return _schedule(np.linspace(beta_start * scale, beta_end * scale, num_timesteps, dtype=np.float64))


def cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal (2021), eq. 17: f(u) = cos((u + s) / (1 + s) * pi / 2)^2, u = t / T."""
    return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def cosine_schedule(num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """alpha_bar_t = f(t) / f(0) through betas clipped to `max_beta` (the paper's clipping)."""
    T = num_timesteps
    f = cosine_alpha_bar(np.arange(T + 1, dtype=np.float64) / T, s)
    return _schedule(np.minimum(1 - f[1:] / f[:-1], max_beta))


def make_schedule(name: str, num_timesteps: int = 1000) -> Schedule:
    if name == "linear":
        return linear_schedule(num_timesteps)
    if name == "cosine":
        return cosine_schedule(num_timesteps)
    raise ValueError(f"unknown noise schedule {name!r}: use one of {', '.join(SCHEDULES)}")


def _bcast(v_B: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(v_B, v_B.shape + (1,) * (x.ndim - v_B.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t_B: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise: the closed-form forward process."""
    ab = _bcast(schedule.alpha_bars[t_B], x0)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise


def loss_weights(schedule: Schedule, t_B: jax.Array, min_snr_gamma: float = 0.0) -> jax.Array:
    """Per-example weights of the epsilon MSE: 1, or min(SNR, gamma) / SNR with `min_snr_gamma` > 0."""
    if not min_snr_gamma:
        return jnp.ones(t_B.shape, jnp.float32)
    snr = schedule.snr(t_B)
    return jnp.minimum(snr, min_snr_gamma) / snr


def guided(eps_cond: jax.Array, eps_uncond: jax.Array, weight: jax.Array | float) -> jax.Array:
    """Classifier-free guidance: (1 + w) eps(x, c) - w eps(x, null); w = 0 is the conditional prediction."""
    return (1 + weight) * eps_cond - weight * eps_uncond


def predict_x0_eps(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array,
                   clip: float | None) -> tuple[jax.Array, jax.Array]:
    """x_0 implied by (x_t, eps); with `clip`, x_0 clipped and eps made consistent with it."""
    ab = schedule.alpha_bar(t)
    x0 = (x_t - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab)
    if clip is not None:
        x0 = jnp.clip(x0, -clip, clip)
        eps = (x_t - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)
    return x0, eps


def ddpm_step(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array, z: jax.Array,
              clip: float | None = None) -> jax.Array:
    """x_{t-1} ~ q(x_{t-1} | x_t, x_0_hat): the posterior mean plus sqrt(beta_tilde_t) z (no noise at t = 0)."""
    x0, _ = predict_x0_eps(schedule, x_t, t, eps, clip)
    beta, ab, ab_prev = schedule.betas[t], schedule.alpha_bar(t), schedule.alpha_bar(t - 1)
    mean = (jnp.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (jnp.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x_t
    var = beta * (1 - ab_prev) / (1 - ab)
    return mean + jnp.where(t > 0, jnp.sqrt(var), 0.0) * z


def ddim_step(schedule: Schedule, x_t: jax.Array, t: jax.Array, s: jax.Array, eps: jax.Array, z: jax.Array,
              eta: float = 0.0, clip: float | None = None) -> jax.Array:
    """From step t to an earlier step s (s = -1: the data)."""
    x0, eps = predict_x0_eps(schedule, x_t, t, eps, clip)
    ab, ab_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
    sigma = eta * jnp.sqrt((1 - ab_s) / (1 - ab) * (1 - ab / ab_s))
    return jnp.sqrt(ab_s) * x0 + jnp.sqrt(jnp.maximum(1 - ab_s - sigma ** 2, 0.0)) * eps + sigma * z


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """`num_steps` timesteps from T-1 down to 0, evenly spaced (every step when num_steps = T)."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"sampling steps must be in 1..{num_timesteps} (the schedule's T), got {num_steps}")
    return np.round(np.linspace(num_timesteps - 1, 0, num_steps)).astype(np.int32)


def _eps(eps_fn: EpsFn, x: jax.Array, t: jax.Array) -> jax.Array:
    return eps_fn(x, jnp.full((x.shape[0],), t, jnp.int32))


def ddpm_sample(eps_fn: EpsFn, schedule: Schedule, x_T: jax.Array, key: jax.Array,
                clip: float | None = None) -> jax.Array:
    """Ancestral sampling through all T steps."""
    def step(x, t):
        z = jax.random.normal(jax.random.fold_in(key, t), x.shape, x.dtype)
        return ddpm_step(schedule, x, t, _eps(eps_fn, x, t), z, clip), None

    ts = jnp.arange(schedule.num_timesteps - 1, -1, -1, dtype=jnp.int32)
    return jax.lax.scan(step, x_T, ts)[0]


def ddim_sample(eps_fn: EpsFn, schedule: Schedule, x_T: jax.Array, key: jax.Array, num_steps: int,
                eta: float = 0.0, clip: float | None = None) -> jax.Array:
    """DDIM through `num_steps` evenly spaced timesteps; eta = 0 is deterministic given x_T."""
    ts = ddim_timesteps(schedule.num_timesteps, num_steps)
    pairs = jnp.asarray(np.stack([ts, np.append(ts[1:], -1)], axis=1))

    def step(x, ts_pair):
        t, s = ts_pair[0], ts_pair[1]
        z = jax.random.normal(jax.random.fold_in(key, t), x.shape, x.dtype)
        return ddim_step(schedule, x, t, s, _eps(eps_fn, x, t), z, eta, clip), None

    return jax.lax.scan(step, x_T, pairs)[0]
