"""Recurrent vs torch.nn.RNN/LSTM/GRU: same weights give the same outputs, final states and gradients."""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdl.convert.recurrent import params_from_torch, params_to_torch  # noqa: E402
from jaxdl.models.recurrent import Recurrent  # noqa: E402

torch.set_num_threads(2)

TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
B, T, D, H, LAYERS = 4, 7, 5, 6, 2
LENGTHS = [5, T, 1, 3]  # unsorted, one full, one of length 1
CASES = {"zero carry": (False, None), "initial carry": (True, None), "lengths": (True, LENGTHS)}
CONFIGS = pytest.mark.parametrize("cell,bidirectional", [(c, b) for c in ("rnn", "lstm", "gru") for b in (False, True)])


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    """The tolerances are for float32 arithmetic: no TF32 where the default allows it (GPUs); a no-op on CPU."""
    with jax.default_matmul_precision("highest"):
        yield


def _torch_rnn(cell, bidirectional, seed=0):
    torch.manual_seed(seed)
    net = TORCH[cell](D, H, num_layers=LAYERS, batch_first=True, bidirectional=bidirectional).float()
    with torch.no_grad():  # default biases are already non-zero; perturb them so a dropped bias clearly shows
        for name, p in net.named_parameters():
            if name.startswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    return net


def _data(seed, cell, bidirectional):
    """Input x, an initial carry, and fixed weights for the outputs and the final h (and c) in the loss."""
    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    nd = LAYERS * (2 if bidirectional else 1)
    carry0 = (0.5 * f32(nd, B, H), 0.5 * f32(nd, B, H)) if cell == "lstm" else 0.5 * f32(nd, B, H)
    return f32(B, T, D), carry0, (f32(B, T, H * (2 if bidirectional else 1)), f32(nd, B, H), f32(nd, B, H))


def _loss(y, carry, w, sin, tanh):
    """sum(y * wy) + sum(sin(h) * wh) (+ sum(tanh(c) * wc) for the LSTM): works for jax and torch arrays."""
    wy, wh, wc = w
    h, c = carry if isinstance(carry, tuple) else (carry, None)
    loss = (y * wy).sum() + (sin(h) * wh).sum()
    return loss if c is None else loss + (tanh(c) * wc).sum()


def _leaves(tree):
    return [np.asarray(a.detach().numpy() if hasattr(a, "detach") else a) for a in
            (tree if isinstance(tree, tuple) else (tree,))]


def _run_torch(net, x, carry0, lengths, w):
    """Torch forward + backward of the loss: outputs, final carry, param grads, x grad, carry0 grad."""
    net.zero_grad()
    x_t = torch.from_numpy(x).requires_grad_(True)
    c0 = None if carry0 is None else tuple(torch.from_numpy(a).requires_grad_(True) for a in _leaves(carry0))
    inp = x_t
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.as_tensor(lengths), batch_first=True,
                                                      enforce_sorted=False)
    y, carry = net(inp, None if c0 is None else c0 if len(c0) == 2 else c0[0])
    if lengths is not None:
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
    wt = tuple(torch.from_numpy(a) for a in w)
    _loss(y, carry, wt, torch.sin, torch.tanh).backward()
    grads = {name: p.grad.numpy().copy() for name, p in net.named_parameters()}
    return dict(y=_leaves(y)[0], carry=_leaves(carry), grads=grads, gx=x_t.grad.numpy(),
                gc0=None if c0 is None else [a.grad.numpy() for a in c0])


@functools.lru_cache(maxsize=None)
def _results(cell, bidirectional):
    """For every case: (ours, torch's) outputs, final carry and gradients; one jit for all our cases."""
    net = _torch_rnn(cell, bidirectional)
    params = params_from_torch(net.state_dict(), LAYERS, bidirectional)
    model = Recurrent(cell, H, LAYERS, bidirectional)
    x, carry0, w = _data(1, cell, bidirectional)

    def loss_fn(p, x, c0, lengths):
        y, carry = model.apply(p, x, c0, lengths)
        return _loss(y, carry, w, jnp.sin, jnp.tanh), (y, carry)

    @jax.jit
    def all_cases(p, x, c0):
        out = {}
        for case, (with_carry, lengths) in CASES.items():
            lens = None if lengths is None else jnp.asarray(lengths)
            grad_fn = jax.value_and_grad(loss_fn, (0, 1, 2), has_aux=True)
            out[case] = grad_fn(p, x, c0 if with_carry else None, lens)
        return out

    ours = jax.device_get(all_cases(params, jnp.asarray(x), jax.tree.map(jnp.asarray, carry0)))
    results = {}
    for case, (with_carry, lengths) in CASES.items():
        (_, (y, carry)), (g_p, g_x, g_c0) = ours[case]
        mine = dict(y=np.asarray(y), carry=_leaves(carry), grads=params_to_torch(g_p, LAYERS, bidirectional),
                    gx=np.asarray(g_x), gc0=None if g_c0 is None else _leaves(g_c0))
        results[case] = mine, _run_torch(net, x, carry0 if with_carry else None, lengths, w)
    return results


def _check(cell, bidirectional, case):
    mine, want = _results(cell, bidirectional)[case]
    # forward: float32, same op order up to matmul blocking; 1e-5 absolute (outputs and states are O(1))
    np.testing.assert_allclose(mine["y"], want["y"], rtol=0, atol=1e-5, err_msg="outputs")
    assert len(mine["carry"]) == len(want["carry"]) == (2 if cell == "lstm" else 1)
    for name, a, b in zip("hc", mine["carry"], want["carry"]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=f"final {name}")
    # backward through T steps and 2 layers: 1e-4 absolute (gradients are O(1)..O(10))
    assert set(mine["grads"]) == set(want["grads"])
    for name, g in mine["grads"].items():
        np.testing.assert_allclose(g, want["grads"][name], rtol=0, atol=1e-4, err_msg=f"grad {name}")
        assert np.abs(g).max() > 1e-2, name  # every weight really gets a gradient, so the check means something
    np.testing.assert_allclose(mine["gx"], want["gx"], rtol=0, atol=1e-4, err_msg="grad x")
    assert (mine["gc0"] is None) == (want["gc0"] is None)
    for name, a, b in zip("hc", mine["gc0"] or [], want["gc0"] or []):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4, err_msg=f"grad {name}0")
    assert not np.allclose(mine["y"][0], mine["y"][1], atol=1e-3)  # the sequences really differ
    return mine, want


@CONFIGS
def test_same_weights_same_outputs_states_and_grads(cell, bidirectional):
    """Zero initial carry (None), full-length sequences: outputs, final states, grads of weights and x."""
    _check(cell, bidirectional, "zero carry")


@CONFIGS
def test_nonzero_initial_carry(cell, bidirectional):
    """h0 (and c0) passed to both, in torch's (layers * directions, B, H) layout; grads w.r.t. them too."""
    mine, _ = _check(cell, bidirectional, "initial carry")
    zero, _ = _results(cell, bidirectional)["zero carry"]
    assert not np.allclose(mine["y"], zero["y"], atol=1e-3)  # the initial carry is really used


@CONFIGS
def test_lengths_match_packed_sequence(cell, bidirectional):
    """Lengths (and h0) == pack_padded_sequence(enforce_sorted=False) -> pad_packed_sequence(total_length=T)."""
    mine, want = _check(cell, bidirectional, "lengths")
    pad_BT = np.arange(T)[None, :] >= np.asarray(LENGTHS)[:, None]
    assert not mine["y"][pad_BT].any() and not want["y"][pad_BT].any()  # padded outputs are exact zeros
    assert not mine["gx"][pad_BT].any()  # and padding gets no gradient


@CONFIGS
def test_state_dict_round_trip(cell, bidirectional):
    """to_torch(from_torch(sd)) == sd exactly; it loads strictly into a fresh module; shapes match init."""
    net = _torch_rnn(cell, bidirectional)
    sd = net.state_dict()
    params = params_from_torch(sd, LAYERS, bidirectional)
    model = Recurrent(cell, H, LAYERS, bidirectional)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((B, T, D)))
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, shapes)

    back = params_to_torch(params, LAYERS, bidirectional)
    assert set(back) == set(sd)
    for name, v in back.items():
        assert v.dtype == np.float32 and v.shape == tuple(sd[name].shape), name
        np.testing.assert_array_equal(v, sd[name].numpy(), err_msg=name)

    fresh = TORCH[cell](D, H, num_layers=LAYERS, batch_first=True, bidirectional=bidirectional)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    for name, v in fresh.state_dict().items():
        assert torch.equal(v, sd[name]), name

    # the other way: jax arrays -> torch -> ours is exact too
    rng = np.random.default_rng(5)
    ours = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), shapes)
    fresh.load_state_dict({k: torch.tensor(v) for k, v in params_to_torch(ours, LAYERS, bidirectional).items()},
                          strict=True)
    again = params_from_torch(fresh.state_dict(), LAYERS, bidirectional)
    assert jax.tree.structure(again) == jax.tree.structure(ours)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=jax.tree_util.keystr(path))
