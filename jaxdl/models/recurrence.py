"""The cells and their time loop: one direction of one recurrent layer, with PyTorch's exact arithmetic.

Per layer and direction, with x the input and h, c the carried state (W x means x @ w):

    rnn:   h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    lstm:  i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh)          (PyTorch's gate order)
           c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigmoid(o) tanh(c')
    gru:   r, z, n_x = split(W_ih x + b_ih);  r_h, z_h, n_h = split(W_hh h + b_hh)
           r = sigmoid(r + r_h);  z = sigmoid(z + z_h);  n = tanh(n_x + r (n_h))
           h' = (1 - z) n + z h                                      (b_hn stays inside r (...))

`recurrence` runs a cell over a time-major sequence: the input projection of every time step is one
matmul before the loop, only the recurrent matmul runs inside it, and the backward pass is scheduled
as cuDNN's. The flax modules built on it are in `jaxdl.models.recurrent`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
Carry = Any  # h_LBH, or (h_LBH, c_LBH) for the LSTM; L = layers * directions


def sigmoid(x: jax.Array) -> jax.Array:
    """The logistic function as 0.5 tanh(x/2) + 0.5: the same values (to float32 rounding), and
    XLA:CPU evaluates tanh about 2.5x faster than its logistic op."""
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


# A cell step is split at its matmuls: `pre` (linear) joins xg = W_ih x + b_ih and hg = W_hh h + b_hh
# into what the nonlinear `post(z, carry) -> (carry, output)` needs; the backward pass saves z.

def sum_pre(xg_BG, hg_BG):
    return xg_BG + hg_BG


def rnn_post(z_BH, h_BH):
    h_BH = jnp.tanh(z_BH)
    return h_BH, h_BH


def lstm_post(z_BG, carry):
    _, c_BH = carry
    i, f, g, o = jnp.split(z_BG, 4, axis=-1)
    c_BH = sigmoid(f) * c_BH + sigmoid(i) * jnp.tanh(g)
    h_BH = sigmoid(o) * jnp.tanh(c_BH)
    return (h_BH, c_BH), h_BH


def gru_pre(xg_BG, hg_BG):
    """r and z gates summed; the n gate's two halves kept apart (r multiplies only W_hn h + b_hn)."""
    two = 2 * xg_BG.shape[-1] // 3
    return xg_BG[..., :two] + hg_BG[..., :two], xg_BG[..., two:], hg_BG[..., two:]


def gru_post(z, h_BH):
    rz, xn, hn = z
    r, u = jnp.split(sigmoid(rz), 2, axis=-1)
    n = jnp.tanh(xn + r * hn)
    h_BH = (1.0 - u) * n + u * h_BH
    return h_BH, h_BH


CELL_FNS = {"rnn": (sum_pre, rnn_post), "lstm": (sum_pre, lstm_post), "gru": (gru_pre, gru_post)}


def _pack(z):
    """z (or its cotangent) as (one array as wide as the gates, the rest): what the loops store per
    step (see `recurrence`); the GRU's W_hn h + b_hn (H wide) does not fit and is kept apart."""
    if isinstance(z, tuple):
        rz, xn, hn = z
        return jnp.concatenate([rz, xn], axis=-1), hn
    return z, None


def _unpack(main, rest):
    if rest is None:
        return main
    two = 2 * main.shape[-1] // 3
    return main[..., :two], main[..., two:], rest


def cell_step(cell: str, xg_BG: jax.Array, hg_BG: jax.Array, carry: Carry) -> tuple[Carry, jax.Array]:
    """One step of `cell` after its two matmuls -> (new carry, output h)."""
    pre, post = CELL_FNS[cell]
    return post(pre(xg_BG, hg_BG), carry)


def hidden_of(carry: Carry) -> jax.Array:
    return carry[0] if isinstance(carry, tuple) else carry


def _with_hidden(carry: Carry, h: jax.Array) -> Carry:
    return (h, *carry[1:]) if isinstance(carry, tuple) else h


def _row_sum(a_NG: jax.Array) -> jax.Array:
    """Sum over rows as a matmul with ones: on XLA:CPU ~15x faster than the equivalent reduce."""
    return (jnp.ones((1, a_NG.shape[0]), a_NG.dtype) @ a_NG)[0]


IN_PLACE = {"rnn": True, "lstm": True, "gru": False}


def _zeros_like(a):
    return None if a is None else jnp.zeros_like(a)


def _block(a_T, start, n: int):
    """Steps `start .. start+n-1` of a time-major array (or tree, or None), read in one slice."""
    return None if a_T is None else jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, n), a_T)


def _put(a_T, start, steps: list):
    """Write n consecutive steps (a list of arrays or trees, or of None) at `start` in one update."""
    if a_T is None:
        return None
    return jax.tree.map(lambda a, *xs: jax.lax.dynamic_update_slice_in_dim(a, jnp.stack(xs), start, 0), a_T, *steps)


def _step(block, j: int):
    return None if block is None else jax.tree.map(lambda a: a[j], block)


def _blocks(T: int, unroll: int) -> tuple[int, int, int]:
    """(steps per loop iteration K, iterations, leading steps run before the loop): T = r + q K."""
    k = max(1, min(unroll, T))
    q, r = divmod(T, k)
    return k, q, r


def _saved_state(carry: Carry, mask_TB: jax.Array | None) -> Carry:
    """What the forward loop saves of the state each step starts from: all of it under a mask (a
    frozen state is not the zero output), else all but h, which is the previous step's output."""
    if mask_TB is not None:
        return carry
    return tuple(carry[1:]) if isinstance(carry, tuple) else ()


def recurrence(cell: str, w_ih: jax.Array, b_ih: jax.Array, w_hh: jax.Array, b_hh: jax.Array, x_TBD: jax.Array,
               carry: Carry, mask_TB: jax.Array | None = None, unroll: int = 1) -> tuple[jax.Array, Carry]:
    """Run a cell over a time-major sequence: `(h_TBH, final carry)`. Past a sequence's end (mask
    false) its state is frozen and its output is zero.

    The input projection `x @ w_ih + b_ih` of every step is one matmul before the loop; only
    `h @ w_hh` runs inside it. The gradient is scheduled as cuDNN's: the forward loop saves each
    step's gate pre-activations, the backward loop carries only the state's gradient (one matmul
    by W_hh^T per step) and emits each step's gate gradients; every weight and bias gradient is
    then one large matmul over all `T*B` rows instead of T small ones accumulated in the loop.
    The big per-step arrays are updated in place: step t's pre-activations overwrite its input
    projection (read just before), and its gate gradients overwrite those pre-activations, so
    neither loop needs a fresh (zero-filled, then copied) T x B x gates buffer: on XLA:CPU those
    fills and copies cost ~10% of the LSTM language model's training step. (Not for the GRU, whose
    z is two arrays: XLA:CPU then copies the whole buffer every step, so it gets fresh ones.)
    Without a mask the forward loop does not save each step's starting h: it is the previous output.
    `unroll` time steps run per loop iteration (T % unroll of them before the loop), reading their
    slices of the per-step arrays as one block and writing them back as one: XLA:CPU otherwise copies
    whole T-long buffers when several dynamic updates of one buffer share an iteration.
    (Forward-mode autodiff, `jax.jvp`, is not defined through it; reverse mode is, to any order.)
    """
    return _recurrence(cell, unroll)(w_ih, b_ih, w_hh, b_hh, x_TBD, carry, mask_TB)


@functools.lru_cache(maxsize=None)
def _recurrence(cell: str, unroll: int):
    pre, post = CELL_FNS[cell]

    def masked_post(z, carry, m_B):
        new, h_BH = post(z, carry)
        if m_B is None:
            return new, h_BH
        keep = lambda n, o: jnp.where(m_B[:, None], n, o)
        return jax.tree.map(keep, new, carry), jnp.where(m_B[:, None], h_BH, 0.0)

    def scan(w_ih, b_ih, w_hh, b_hh, x_TBD, carry, mask_TB, save: bool):
        T, B, _ = x_TBD.shape
        H = w_hh.shape[0]
        gates_TBG = x_TBD @ w_ih + b_ih  # every step's input projection at once; z replaces it step by step
        rest_T = jnp.zeros((T, B, H), x_TBD.dtype) if save and cell == "gru" else None
        # the state each step starts from; its h is the previous step's output unless masked (frozen state, zero output)
        carries = jax.tree.map(lambda c: jnp.zeros((T, *c.shape), c.dtype), _saved_state(carry, mask_TB)) if save else None

        # in place where z is one array (rnn, lstm); XLA:CPU copies a GRU's whole buffer every step instead
        out_TBG = jnp.zeros_like(gates_TBG) if save and not IN_PLACE[cell] else gates_TBG

        def steps(start, n: int, state):  # time steps start .. start+n-1, each read and written as one block
            carry, out_TBG, h_TBH, rest_T, carries = state
            xg_nBG = _block(out_TBG if IN_PLACE[cell] else gates_TBG, start, n)
            m_nB = _block(mask_TB, start, n)
            hs, mains, rests, saved = [], [], [], []
            for j in range(n):
                z = pre(xg_nBG[j], hidden_of(carry) @ w_hh + b_hh)
                saved.append(_saved_state(carry, mask_TB))
                carry, h_BH = masked_post(z, carry, _step(m_nB, j))
                hs.append(h_BH)
                main, rest = _pack(z)
                mains.append(main)
                rests.append(rest)
            if save:
                out_TBG, rest_T = _put(out_TBG, start, mains), _put(rest_T, start, rests)
                carries = _put(carries, start, saved)
            return carry, out_TBG, _put(h_TBH, start, hs), rest_T, carries

        k, q, r = _blocks(T, unroll)
        state = (carry, out_TBG, jnp.zeros((T, B, H), x_TBD.dtype), rest_T, carries)
        state = steps(0, r, state) if r else state
        carry, z_TBG, h_TBH, rest_T, carries = jax.lax.fori_loop(0, q, lambda i, s: steps(r + i * k, k, s), state)
        return h_TBH, carry, (carries, z_TBG, rest_T)

    @jax.custom_vjp
    def run(w_ih, b_ih, w_hh, b_hh, x_TBD, carry, mask_TB):
        h_TBH, carry, _ = scan(w_ih, b_ih, w_hh, b_hh, x_TBD, carry, mask_TB, save=False)
        return h_TBH, carry

    def run_fwd(w_ih, b_ih, w_hh, b_hh, x_TBD, carry, mask_TB):
        h_TBH, final, saved = scan(w_ih, b_ih, w_hh, b_hh, x_TBD, carry, mask_TB, save=True)
        return (h_TBH, final), (w_ih, w_hh, x_TBD, mask_TB, saved, h_TBH, hidden_of(carry))

    def run_bwd(res, cotangents):
        w_ih, w_hh, x_TBD, mask_TB, (carries, z_TBG, rest_T), h_TBH, h0_BH = res
        dh_TBH, dfinal = cotangents
        T, B, D = x_TBD.shape
        # pre is linear: its transpose, for one step's shape and for all steps at once
        pre_t = lambda *shape: jax.linear_transpose(pre, *(jax.ShapeDtypeStruct((*shape, w_hh.shape[1]), w_hh.dtype),) * 2)

        dz_TBG, drest_T = (z_TBG, rest_T) if IN_PLACE[cell] else (jnp.zeros_like(z_TBG), _zeros_like(rest_T))

        # the state each step starts from; its h is the previous step's output unless masked
        h_prev_TBH = hidden_of(carries) if mask_TB is not None else jnp.concatenate([h0_BH[None], h_TBH[:-1]])
        # W_hh^T laid out once before the loop: XLA:CPU's per-step dot by a transposed operand is slower
        w_hh_T = w_hh.T

        def steps(start, n: int, state):  # time steps start+n-1 down to start, each read and written as one block
            dcarry, dz_TBG, drest_T = state
            z_src, rest_src = (dz_TBG, drest_T) if IN_PLACE[cell] else (z_TBG, rest_T)
            z_nBG, rest_n = _block(z_src, start, n), _block(rest_src, start, n)
            m_nB, dh_nBH = _block(mask_TB, start, n), _block(dh_TBH, start, n)
            carries_n, h_prev_nBH = _block(carries, start, n), _block(h_prev_TBH, start, n)
            mains, rests = [None] * n, [None] * n
            for j in reversed(range(n)):
                z, m_B = _unpack(z_nBG[j], _step(rest_n, j)), _step(m_nB, j)
                carry = _step(carries_n, j) if mask_TB is not None else (
                    (h_prev_nBH[j], *_step(carries_n, j)) if cell == "lstm" else h_prev_nBH[j])
                _, vjp = jax.vjp(lambda z, c: masked_post(z, c, m_B), z, carry)
                dz, dprev = vjp((dcarry, dh_nBH[j]))
                _, dhg_BG = pre_t(B)(dz)
                mains[j], rests[j] = _pack(dz)  # step t's gate gradients in place of its pre-activations
                dcarry = _with_hidden(dprev, hidden_of(dprev) + dhg_BG @ w_hh_T)
            return dcarry, _put(dz_TBG, start, mains), _put(drest_T, start, rests)

        k, q, r = _blocks(T, unroll)
        state = jax.lax.fori_loop(0, q, lambda i, s: steps(r + (q - 1 - i) * k, k, s), (dfinal, dz_TBG, drest_T))
        dcarry, dz_TBG, drest_T = steps(0, r, state) if r else state
        dz_T = _unpack(dz_TBG, drest_T)
        dxg_NG, dhg_NG = pre_t(T * B)(jax.tree.map(lambda a: a.reshape(T * B, -1), dz_T))
        h_NH, x_ND = h_prev_TBH.reshape(T * B, -1), x_TBD.reshape(T * B, D)
        dx_TBD = (dxg_NG @ w_ih.T).reshape(T, B, D)
        return (x_ND.T @ dxg_NG, _row_sum(dxg_NG), h_NH.T @ dhg_NG, _row_sum(dhg_NG), dx_TBD, dcarry, None)

    run.defvjp(run_fwd, run_bwd)
    return run
