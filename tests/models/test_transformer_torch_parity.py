"""DecoderLM vs the PyTorch GPT of benchmarks/torch_gpt.py: jaxdl's params copied into it give the same
logits, the same gradients of the mean next-token cross-entropy, and the same loss after a step of Adam."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from benchmarks.torch_gpt import TorchGPT, gpt_params_to_torch, gpt_state_dict  # noqa: E402
from benchmarks.torch_lm import as_tokens, lm_loss  # noqa: E402
from jaxdl.models.transformer import DecoderLM, unstack_layers  # noqa: E402
from jaxdl.tasks.language_model import LanguageModel  # noqa: E402
from jaxdl.train import make_optimizer  # noqa: E402

torch.set_num_threads(2)

V, D, LAYERS, HEADS, MAX_LEN = 37, 32, 2, 4, 16
B, T = 3, 12  # T < MAX_LEN: only the first T position embeddings are used
LR = 1e-3


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    """The tolerances are for float32 arithmetic: no TF32 where the default allows it (GPUs); a no-op on CPU."""
    with jax.default_matmul_precision("highest"):
        yield


def _model(scan=True):
    return DecoderLM(V, d_model=D, num_layers=LAYERS, num_heads=HEADS, max_len=MAX_LEN, pos="learned",
                     norm="layer", scan=scan)


APPLY = jax.jit(_model().apply)  # jitted once: one compile, shared by the tests


@pytest.fixture(scope="module")
def params():
    """Random params in DecoderLM's (scanned) layout: numpy draws, so no init to compile; LayerNorm
    scales away from 1 and biases away from 0, so a dropped or swapped scale or bias shows."""
    shapes = jax.eval_shape(_model().init, jax.random.key(0), jnp.zeros((B, T), jnp.int32))
    rng = np.random.default_rng(0)
    draw = lambda path, a: (1.0 if path[-1].key == "scale" else 0.0) + 0.1 * rng.standard_normal(a.shape)
    return jax.tree_util.tree_map_with_path(lambda path, a: jnp.asarray(draw(path, a), jnp.float32), shapes)


@pytest.fixture(scope="module")
def loss_and_grad():
    """LanguageModel.loss (the benchmark's) and its gradient, jitted once."""
    task = LanguageModel(_model())
    return jax.jit(jax.value_and_grad(lambda p, tokens: task.loss(p, {"tokens": tokens}, jax.random.key(0))[0]))


def _tokens(seed, length=T + 1):
    return np.random.default_rng(seed).integers(0, V, (B, length)).astype(np.int32)


def test_same_logits(params):
    tokens = _tokens(1, T)
    ours, _ = APPLY(params, tokens)
    net = gpt_params_to_torch(params, TorchGPT(V, D, LAYERS, HEADS, MAX_LEN))
    with torch.no_grad():
        theirs = net(as_tokens(tokens)).numpy()
    assert ours.shape == theirs.shape == (B, T, V)
    assert np.abs(theirs).max() > 0.5  # O(1) logits: the absolute tolerance means something
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=1e-5)


def test_unscanned_params_convert_the_same(params):
    """scan=False names its layers layers_0, layers_1, ... (`unstack_layers`): the same torch weights."""
    unscanned = {"params": {**params["params"], "stack": unstack_layers(params["params"]["stack"], LAYERS)}}
    assert set(jax.eval_shape(_model(scan=False).init, jax.random.key(0), jnp.zeros((B, T), jnp.int32))["params"]["stack"]) \
        == set(unscanned["params"]["stack"])
    a, b = gpt_state_dict(params, LAYERS), gpt_state_dict(unscanned, LAYERS)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["blocks.0.mlp_in.weight"], a["blocks.1.mlp_in.weight"])


def test_refuses_a_model_it_does_not_mirror():
    other = DecoderLM(V, d_model=D, num_layers=1, num_heads=HEADS, max_len=MAX_LEN, tie_embeddings=True)
    p = jax.eval_shape(other.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="tie_embeddings"):
        gpt_state_dict(p, 1)


def test_same_gradients(params, loss_and_grad):
    """Every parameter's gradient of the mean cross-entropy, mapped to torch's layout by the same
    converter as the weights (gradients are shaped like params), agrees to 1e-5 (seen: ~1e-7; the
    gradients' medians are 1e-3..1e-2, so 1e-4 would let a 10% error through)."""
    tokens = _tokens(3)
    loss, grads = loss_and_grad(params, tokens)
    net = gpt_params_to_torch(params, TorchGPT(V, D, LAYERS, HEADS, MAX_LEN))
    theirs = lm_loss(net, as_tokens(tokens))
    theirs.backward()
    assert abs(float(loss) - theirs.item()) < 1e-5
    ours = gpt_state_dict(grads, LAYERS)
    torch_grads = {name: p.grad.numpy() for name, p in net.named_parameters()}
    assert ours.keys() == torch_grads.keys()
    for name, g in torch_grads.items():
        np.testing.assert_allclose(ours[name], g, rtol=0, atol=1e-5, err_msg=name)
    assert min(np.abs(g).max() for n, g in torch_grads.items() if "qkv" not in n) > 1e-3  # real gradients everywhere
    for i in range(LAYERS):  # except the key biases, whose true gradient is 0 (see the Adam test below)
        assert np.abs(ours[f"blocks.{i}.qkv.bias"][D:2 * D]).max() < 1e-6


def test_same_loss_after_an_adam_step(params, loss_and_grad):
    """One step of the engine's Adam (make_optimizer) vs torch.optim.Adam on a first batch: the same
    loss on a second batch (1e-5), and the same weights, except the key biases (see below)."""
    optimizer = make_optimizer("adam", LR, 0.0)

    @jax.jit  # one compile, not one per leaf and op
    def adam_step(params, grads):
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return optax.apply_updates(params, updates)

    net = gpt_params_to_torch(params, TorchGPT(V, D, LAYERS, HEADS, MAX_LEN))
    opt = torch.optim.Adam(net.parameters(), lr=LR)  # betas (0.9, 0.999), eps 1e-8: optax's defaults too
    first, second = _tokens(4), _tokens(5)

    _, grads = loss_and_grad(params, first)
    stepped = adam_step(params, grads)
    lm_loss(net, as_tokens(first)).backward()
    opt.step()

    ours = float(loss_and_grad(stepped, second)[0])
    with torch.no_grad():
        theirs = lm_loss(net, as_tokens(second)).item()
    assert abs(ours - theirs) < 1e-5, (ours, theirs)
    assert abs(ours - float(loss_and_grad(params, second)[0])) > 1e-3  # the step really changed the loss
    # The key biases' true gradient is 0 (q . b_k is the same for every key, and softmax ignores a
    # constant): both frameworks get rounding noise there (~1e-9), which Adam's first step scales up
    # to +-lr with an arbitrary sign. Every other weight moves by the same lr-sized step in both.
    after = gpt_state_dict(stepped, LAYERS)
    for name, p in net.named_parameters():
        a, b = after[name], p.detach().numpy()
        if name.endswith("qkv.bias"):
            a, b = np.delete(a, np.s_[D:2 * D]), np.delete(b, np.s_[D:2 * D])
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=name)
