"""Recurrent: masking, carry continuation, the scan, the cell formulas (float64 numpy), a learnable task."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.models.recurrent import Recurrent, SequenceClassifier

CELLS = ("rnn", "lstm", "gru")
CONFIGS = pytest.mark.parametrize("cell,bidirectional", [(c, b) for c in CELLS for b in (False, True)])


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    """The tolerances are for float32 arithmetic: no TF32 where the default allows it (GPUs); a no-op on CPU."""
    with jax.default_matmul_precision("highest"):
        yield


def _params(model, x, seed=0, scale=None):
    """Params with the model's shapes, drawn with numpy (no compiled init): U(+-1/sqrt(H)), or normal with std scale."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)
    if scale is None:
        k = 1.0 / np.sqrt(model.hidden)
        return jax.tree.map(lambda s: rng.uniform(-k, k, s.shape).astype(np.float32), shapes)
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def _leaves(carry):
    return [np.asarray(a) for a in jax.tree.leaves(carry)]


# (a) masking -------------------------------------------------------------------------------------------------------

@CONFIGS
def test_padding_is_ignored(cell, bidirectional):
    """Padding values change nothing; padded outputs are exact zeros; a sequence alone == inside the batch."""
    T, lengths = 9, (9, 4, 6, 1)
    model = Recurrent(cell, 5, layers=2, bidirectional=bidirectional)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((len(lengths), T, 3)).astype(np.float32)
    params = _params(model, x)
    lens = jnp.asarray(lengths)

    @jax.jit
    def run(x):  # the padded batch, and every sequence alone, unpadded (its own T)
        return model.apply(params, x, None, lens), [model.apply(params, x[b:b + 1, :n]) for b, n in enumerate(lengths)]

    pad_BT = np.arange(T)[None, :] >= np.asarray(lengths)[:, None]
    x2 = np.where(pad_BT[..., None], 100.0 * rng.standard_normal(x.shape), x).astype(np.float32)
    assert not np.array_equal(x, x2)
    (y, carry), alone = jax.device_get(run(x))
    (y2, carry2), _ = jax.device_get(run(x2))
    # other padding: bit-identical outputs and final states
    np.testing.assert_array_equal(y, y2)
    for a, b in zip(_leaves(carry), _leaves(carry2)):
        np.testing.assert_array_equal(a, b)
    assert not y[pad_BT].any()
    # each sequence alone: same outputs up to its length and the same final state
    for b, (n, (y1, c1)) in enumerate(zip(lengths, alone)):
        np.testing.assert_allclose(y[b, :n], y1[0], rtol=0, atol=1e-6, err_msg=f"outputs of sequence {b}")
        for a, c in zip(_leaves(carry), _leaves(c1)):
            np.testing.assert_allclose(a[:, b], c[:, 0], rtol=0, atol=1e-6, err_msg=f"final state of sequence {b}")


# (b) carry continuation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_carry_continues_a_sequence(cell):
    """Two halves, the first half's final carry fed into the second, == the whole sequence at once."""
    model = Recurrent(cell, 5, layers=2)
    x = np.random.default_rng(2).standard_normal((3, 10, 4)).astype(np.float32)
    params = _params(model, x)

    @jax.jit
    def run(x):
        whole = model.apply(params, x)
        y1, c1 = model.apply(params, x[:, :4])
        y2, c2 = model.apply(params, x[:, 4:], c1)
        return whole, (jnp.concatenate([y1, y2], axis=1), c2)

    (y, c), (y12, c12) = run(x)
    np.testing.assert_allclose(y12, y, rtol=0, atol=1e-6)
    for a, b in zip(_leaves(c12), _leaves(c)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


# (c) the scan is a scan --------------------------------------------------------------------------------------------

def _eqns(jaxpr):
    """All equations of a jaxpr, sub-jaxprs (scan bodies, pjit calls, ...) included."""
    out = []
    for eqn in jaxpr.eqns:
        out.append(eqn)
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    out += _eqns(sub)
    return out


@pytest.mark.parametrize("cell", CELLS)
def test_time_loop_is_one_scan(cell):
    """A `scan` of length T per layer and direction (more with the backward pass); no growth with T."""
    model = Recurrent(cell, 4, layers=2, bidirectional=True)
    params = _params(model, jnp.zeros((2, 8, 3)))
    forward = lambda p, x, n: model.apply(p, x, None, n)
    backward = jax.grad(lambda p, x, n: jnp.sum(forward(p, x, n)[0]), argnums=(0, 1))
    for fn, n_scans in ((forward, 4), (backward, 8)):  # backward: at least a forward and a reverse scan each
        sizes = []
        for t in (8, 64):
            jaxpr = jax.make_jaxpr(fn)(params, jnp.zeros((2, t, 3)), jnp.array([t, 3]))
            eqns = _eqns(jaxpr.jaxpr)
            scans = [e for e in eqns if e.primitive.name == "scan"]
            assert (len(scans) == n_scans) if fn is forward else (len(scans) >= n_scans)
            assert all(e.params["length"] == t for e in scans)
            sizes.append((len(jaxpr.jaxpr.eqns), len(eqns)))
        assert sizes[0] == sizes[1]


# (d) unknown cell ---------------------------------------------------------------------------------------------------

def test_unknown_cell_raises():
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        Recurrent("transformer", 4)
    with pytest.raises(ValueError, match="unknown cell"):
        SequenceClassifier(2, cell="LSTM").init(jax.random.key(0), jnp.zeros((1, 3, 2)))


# (e) unroll -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,with_lengths",
                         [("rnn", True), ("lstm", True), ("lstm", False), ("gru", True), ("gru", False)])
def test_unroll_gives_the_same_outputs_and_gradients(cell, with_lengths):
    """unroll=3 (which does not divide T=7: one step before the loop of 3-step blocks) == unroll=1:
    outputs and final state (1e-6) and every gradient (1e-5), bidirectional, with an initial carry,
    with and without lengths (the backward pass reads a frozen state's saved h, or the previous output)."""
    x = np.random.default_rng(3).standard_normal((3, 7, 4)).astype(np.float32)
    lens = jnp.array([7, 2, 5]) if with_lengths else None
    models = [Recurrent(cell, 5, layers=2, bidirectional=True, unroll=u) for u in (1, 3)]
    params = _params(models[0], x)
    carry0 = jax.tree.map(lambda a: a + 0.3, models[0].initial_carry(3))

    def loss(m, p, x):
        y, c = m.apply(p, x, carry0, lens)
        return jnp.sum(jnp.sin(y)) + sum(jnp.sum(a ** 2) for a in jax.tree.leaves(c)), (y, c)

    run = jax.value_and_grad(loss, (1, 2), has_aux=True)
    ((_, (y1, c1)), g1), ((_, (y3, c3)), g3) = jax.jit(lambda p, x: [run(m, p, x) for m in models])(params, x)
    np.testing.assert_allclose(y3, y1, rtol=0, atol=1e-6)
    for a, b in zip(_leaves(c3), _leaves(c1)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert len(jax.tree.leaves(g1)) == 4 * 4 + 1  # 4 weights x 2 layers x 2 directions, and x
    for a, b in zip(jax.tree.leaves(g3), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


# (f) the cell formulas, against float64 numpy ----------------------------------------------------------------------

def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _np_step(cell, p, x_BD, carry):
    """One step of torch's cells in float64, written from torch's docs; p: one layer of our params."""
    b_ih, b_hh = (np.asarray(p[k], np.float64) for k in ("b_ih", "b_hh"))
    w_ih, w_hh = (np.asarray(p[k], np.float64).T for k in ("w_ih", "w_hh"))  # torch's (G*H, D) and (G*H, H)
    if cell == "rnn":
        h = np.tanh(x_BD @ w_ih.T + b_ih + carry @ w_hh.T + b_hh)
        return h, h
    if cell == "lstm":
        h, c = carry
        i, f, g, o = np.split(x_BD @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=-1)  # torch's gate order
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return (h, c), h
    W_ir, W_iz, W_in = np.split(w_ih, 3)
    W_hr, W_hz, W_hn = np.split(w_hh, 3)
    b_ir, b_iz, b_in = np.split(b_ih, 3)
    b_hr, b_hz, b_hn = np.split(b_hh, 3)
    r = _sigmoid(x_BD @ W_ir.T + b_ir + carry @ W_hr.T + b_hr)
    z = _sigmoid(x_BD @ W_iz.T + b_iz + carry @ W_hz.T + b_hz)
    n = np.tanh(x_BD @ W_in.T + b_in + r * (carry @ W_hn.T + b_hn))
    h = (1 - z) * n + z * carry
    return h, h, r


def _np_run(cell, p, x_BTD, carry):
    ys, rs = [], []
    for t in range(x_BTD.shape[1]):
        out = _np_step(cell, p, x_BTD[:, t].astype(np.float64), carry)
        carry, y = out[0], out[1]
        ys.append(y)
        rs += out[2:]
    return np.stack(ys, axis=1), carry, rs


@pytest.mark.parametrize("cell", CELLS)
def test_step_matches_float64_numpy(cell):
    """rnn, lstm (gates i, f, g, o) and gru (b_hn inside r * (...)) against numpy float64, to 1e-6."""
    B, T, D, H = 3, 4, 4, 5
    model = Recurrent(cell, H)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    params = _params(model, x, seed=5, scale=0.5)
    h0 = (0.5 * rng.standard_normal((1, B, H))).astype(np.float32)
    c0 = (0.5 * rng.standard_normal((1, B, H))).astype(np.float32)
    carry0 = (h0, c0) if cell == "lstm" else h0
    y, carry = model.apply(params, x, carry0)
    want_y, want_carry, _ = _np_run(cell, params["params"]["layer0"], x, jax.tree.map(lambda a: a[0], carry0))
    np.testing.assert_allclose(y, want_y, rtol=0, atol=1e-6)
    for a, b in zip(_leaves(carry), jax.tree.leaves(want_carry)):
        np.testing.assert_allclose(a[0], b, rtol=0, atol=1e-6)
    assert np.abs(want_y).max() > 0.3  # not saturated near zero: the comparison is meaningful


def test_gru_keeps_b_hn_inside_the_reset_gate():
    """The n-part of b_hh is multiplied by r; the same value in b_ih's n-part is not, and gives other outputs."""
    B, T, D, H = 3, 4, 4, 5
    model = Recurrent("gru", H)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    base = _params(model, x, seed=7, scale=0.5)
    v = (1.5 * rng.standard_normal(H)).astype(np.float32)

    def with_bias(which):
        p = jax.tree.map(np.array, base)
        layer = p["params"]["layer0"]
        layer["b_ih"][2 * H:] = 0.0
        layer["b_hh"][2 * H:] = 0.0
        layer[which][2 * H:] = v
        return p

    h0 = (0.5 * rng.standard_normal((1, B, H))).astype(np.float32)
    outs = {}
    for which in ("b_hh", "b_ih"):
        p = with_bias(which)
        y, _ = model.apply(p, x, h0)
        want, _, rs = _np_run("gru", p["params"]["layer0"], x, h0[0])
        np.testing.assert_allclose(y, want, rtol=0, atol=1e-6, err_msg=which)
        assert max(np.abs(1 - r).max() for r in rs) > 0.2  # the reset gate is far from all ones
        outs[which] = np.asarray(y)
    assert np.abs(outs["b_hh"] - outs["b_ih"]).max() > 1e-2


# (g) a small task ----------------------------------------------------------------------------------------------------

V, TMAX = 4, 12


def _count_task(rng, n):
    """Tokens in 0..3, lengths 3..12, padded to 12 with *random* tokens; label: more 1s than 2s in the real part."""
    lengths = rng.integers(3, TMAX + 1, n)
    tokens = rng.integers(0, V, (n, TMAX))
    real = np.arange(TMAX)[None, :] < lengths[:, None]
    labels = ((tokens == 1) & real).sum(1) > ((tokens == 2) & real).sum(1)
    return tokens.astype(np.int32), lengths.astype(np.int32), labels.astype(np.int32)


def test_sequence_classifier_learns_a_counting_task():
    """An LSTM (hidden 32) reaches >= 90% held-out accuracy in 300 Adam steps; it needs the lengths to do so."""
    model = SequenceClassifier(2, vocab_size=V, cell="lstm", embed=16, hidden=32)
    rng = np.random.default_rng(0)
    tx = optax.adam(1e-2)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, TMAX), jnp.int32), jnp.full((2,), TMAX))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, tokens, lengths, labels):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, tokens, lengths), labels).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for _ in range(300):
        params, opt_state, loss = step(params, opt_state, *_count_task(rng, 64))
    tokens, lengths, labels = _count_task(np.random.default_rng(100), 1000)
    predict = jax.jit(lambda p, t, n: jnp.argmax(model.apply(p, t, n), -1))
    accuracy = float((predict(params, tokens, lengths) == labels).mean())
    assert accuracy >= 0.9, (accuracy, float(loss))
    # the same net reading the random padding as if it were real does clearly worse (~80%)
    assert float((predict(params, tokens, None) == labels).mean()) < accuracy - 0.1


def test_bidirectional_classifier_shapes():
    """Both directions' final states feed the head: (B, classes) logits, a (2 * hidden, classes) kernel."""
    model = SequenceClassifier(3, vocab_size=V, hidden=8, layers=2, bidirectional=True)
    tokens, lengths = jnp.zeros((5, 7), jnp.int32), jnp.array([7, 1, 3, 5, 2])
    params = jax.eval_shape(model.init, jax.random.key(0), tokens, lengths)
    assert params["params"]["Dense_0"]["kernel"].shape == (16, 3)
    assert jax.eval_shape(model.apply, params, tokens, lengths).shape == (5, 3)


def test_language_model_usable_from_flax_nnx_through_the_bridge():
    from flax import nnx

    from jaxdl.models.recurrent import RecurrentLM

    linen_model = RecurrentLM(11, "gru", embed=4, hidden=8, layers=2)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, 11)
    nnx_model = nnx.bridge.ToNNX(linen_model, rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(nnx_model, tokens)
    params = {"params": nnx.to_pure_dict(nnx.state(nnx_model, nnx.Param))}
    logits, _ = nnx_model(tokens)
    np.testing.assert_allclose(logits, linen_model.apply(params, tokens)[0], rtol=1e-6, atol=1e-6)
