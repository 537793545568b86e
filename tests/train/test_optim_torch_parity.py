"""jaxdl's optimizers, schedule and clipping take the same steps as their PyTorch counterparts."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from jaxdl.train import make_optimizer  # noqa: E402
from jaxdl.train.optim import make_schedule  # noqa: E402

torch.set_num_threads(2)

LR, WD, STEPS = 0.01, 0.01, 20
_rng = np.random.default_rng(0)
A = _rng.standard_normal((4, 5)).astype(np.float32)
B = _rng.standard_normal((4, 3)).astype(np.float32)
START = {"w": _rng.standard_normal((5, 3)).astype(np.float32), "u": _rng.standard_normal(3).astype(np.float32)}


def _f_jax(p):
    """A small non-quadratic objective over two tensors (so clipping uses a real global norm)."""
    r = A @ p["w"] + p["u"] - B
    return jnp.sum(r ** 2) + jnp.sum(jnp.sin(3.0 * p["w"])) + jnp.sum(jnp.cos(2.0 * p["u"]))


def _f_torch(p):
    r = torch.from_numpy(A) @ p["w"] + p["u"] - torch.from_numpy(B)
    return torch.sum(r ** 2) + torch.sum(torch.sin(3.0 * p["w"])) + torch.sum(torch.cos(2.0 * p["u"]))


def _run_jax(optimizer, steps=STEPS):
    params = jax.tree.map(jnp.asarray, START)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(_f_jax)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    return jax.tree.map(np.asarray, params)


def _run_torch(make_opt, steps=STEPS, clip_norm=0.0, lr_lambda=None):
    params = {k: torch.tensor(v, requires_grad=True) for k, v in START.items()}
    opt = make_opt(list(params.values()))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda else None
    norms = []
    for _ in range(steps):
        opt.zero_grad()
        _f_torch(params).backward()
        if clip_norm:
            norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), clip_norm)))
        opt.step()
        if sched:
            sched.step()
    return {k: v.detach().numpy() for k, v in params.items()}, norms


TORCH_OPTIMIZERS = {
    "adam": lambda ps, lr=LR: torch.optim.Adam(ps, lr=lr, weight_decay=WD),
    "adamw": lambda ps, lr=LR: torch.optim.AdamW(ps, lr=lr, weight_decay=WD),
    "sgd": lambda ps, lr=LR: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=WD),
    "rmsprop": lambda ps, lr=LR: torch.optim.RMSprop(ps, lr=lr, alpha=0.99, eps=1e-8, weight_decay=WD),
}


def _assert_close(got, want, atol=1e-5):
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=atol, err_msg=k)
    # the run really moved the parameters (otherwise agreement would prove nothing)
    assert max(np.abs(want[k] - START[k]).max() for k in want) > 0.05


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_optimizer_matches_torch(name):
    got = _run_jax(make_optimizer(name, LR, WD, momentum=0.9))
    want, _ = _run_torch(TORCH_OPTIMIZERS[name])
    _assert_close(got, want)


def test_adam_and_adamw_decay_differently():
    """Coupled and decoupled decay really are different rules (so the two parities are two checks)."""
    a = _run_jax(make_optimizer("adam", LR, 0.5))
    b = _run_jax(make_optimizer("adamw", LR, 0.5))
    assert not np.allclose(a["w"], b["w"], atol=1e-4)


def _warmup_cosine(step, warmup, total):
    """The closed form: linear 0 -> 1 over `warmup` steps, then half a cosine down to 0 at `total`."""
    if step < warmup:
        return step / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))


def test_cosine_schedule_with_warmup_matches_closed_form_and_torch():
    warmup, total = 3, 20
    optimizer = make_optimizer("adam", LR, WD, schedule="cosine", warmup_steps=warmup, total_steps=total)
    sched = make_schedule(LR, "cosine", warmup, total)
    # the schedule itself: lr * warmup-then-cosine, step 0 at lr 0 (as optax and Hugging Face's warmup)
    for step in range(total + 3):
        np.testing.assert_allclose(float(sched(step)), LR * _warmup_cosine(step, warmup, total), rtol=1e-6, atol=1e-9)

    # and inside the optimizer: torch's LambdaLR with the same closed form, stepped after each update
    got = _run_jax(optimizer)
    want, _ = _run_torch(TORCH_OPTIMIZERS["adam"], lr_lambda=lambda s: _warmup_cosine(s, warmup, total))
    _assert_close(got, want)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_gradient_clipping_matches_torch(name):
    clip = 1.0
    got = _run_jax(make_optimizer(name, LR, WD, clip_norm=clip))
    want, norms = _run_torch(TORCH_OPTIMIZERS[name], clip_norm=clip)
    assert max(norms) > 2 * clip  # clipping was active
    _assert_close(got, want)
    unclipped = _run_jax(make_optimizer(name, LR, WD))
    assert not np.allclose(unclipped["w"], got["w"], atol=1e-4)
