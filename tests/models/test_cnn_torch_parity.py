"""MyNet vs the seed's PyTorch CNN: same weights give the same logits and the same Adam steps."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from benchmarks.torch_models import MY_NET, mynet_params_from_torch, mynet_params_to_torch  # noqa: E402
from jaxdl.models.cnn import MyNet  # noqa: E402
from jaxdl.train import TrainState, make_optimizer, make_train_step  # noqa: E402

torch.set_num_threads(2)


def _torch_net(seed, **kwargs):
    torch.manual_seed(seed)
    net = MY_NET(**kwargs).float()
    with torch.no_grad():  # default biases are small; make them clearly non-zero so a dropped bias shows
        for name in ("conv1", "conv2", "conv3", "fc1", "fc2"):
            getattr(net, name).bias.normal_(0.0, 0.1)
    return net


def _batch(seed, n, size, channels, classes):
    rng = np.random.default_rng(seed)
    x_BHWC = rng.standard_normal((n, size, size, channels), dtype=np.float32)
    labels = rng.integers(0, classes, n)
    return x_BHWC, labels


def _nchw(x_BHWC):
    return torch.from_numpy(np.ascontiguousarray(x_BHWC.transpose(0, 3, 1, 2)))


def _assert_tree_equal(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("size,channels,classes,pool", [(48, 3, 10, "max"), (28, 3, 10, "max"),
                                                        (28, 1, 10, "max"), (32, 3, 43, "avg")])
def test_same_weights_same_logits(size, channels, classes, pool):
    net = _torch_net(0, num_classes=classes, in_channels=channels, image_size=size, pool=pool).eval()
    params = mynet_params_from_torch(net)
    model = MyNet(num_classes=classes, image_size=size, in_channels=channels, pool=pool)
    shapes = jax.tree.map(np.shape, jax.eval_shape(model.init, jax.random.key(0), model.example_input()))
    assert jax.tree.map(np.shape, params) == shapes

    x_BHWC, _ = _batch(1, 4, size, channels, classes)
    with torch.no_grad():
        want = net(_nchw(x_BHWC)).numpy()
    got = np.asarray(model.apply(params, jnp.asarray(x_BHWC), train=False))
    # float32 sums of up to 18,432 terms in a different order: 1e-4 relative to the logits' scale
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    assert not np.allclose(want[0], want[1])  # the inputs really differ, so the check means something

    # to_torch(from_torch) is exact
    other = MY_NET(num_classes=classes, in_channels=channels, image_size=size, pool=pool)
    mynet_params_to_torch(params, other)
    for (name, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name
    _assert_tree_equal(mynet_params_from_torch(other), params)


def test_fc1_row_permutation_is_needed():
    """Without the (C,H,W) -> (H,W,C) row permutation of fc1 the logits would differ."""
    net = _torch_net(0, image_size=16).eval()
    params = mynet_params_from_torch(net)
    naive = jax.tree.map(lambda x: x, params)
    naive["params"]["fc1"]["kernel"] = net.fc1.weight.detach().numpy().T
    x_BHWC, _ = _batch(1, 2, 16, 3, 10)
    model = MyNet(image_size=16)
    assert not np.allclose(model.apply(naive, x_BHWC), model.apply(params, x_BHWC), atol=1e-4)


def _grads_from_torch(net, wd):
    """The gradient Adam actually sees (loss gradient + wd * weight, PyTorch's coupled L2), in Flax layout."""
    shadow = copy.deepcopy(net)
    with torch.no_grad():
        for p_shadow, p in zip(shadow.parameters(), net.parameters()):
            p_shadow.copy_(p.grad + wd * p)
    return mynet_params_from_torch(shadow)


def test_adam_steps_match_torch():
    """jaxdl's adam (coupled L2, PyTorch's Adam(weight_decay)) takes the same steps as torch.optim.Adam.

    Tolerance: 1e-5 absolute per weight (Adam moves a weight by about lr = 1e-3 per step, so that is 1% of a
    step), except where the gradient Adam sees (loss grad + wd * w) nearly cancels to |g| ~ eps = 1e-8.
    There Adam's step lr * g / (|g| + eps) turns a float32 rounding difference of ~1e-9 in g (sums over
    thousands of terms, in different orders in XLA and PyTorch) into up to a whole step: a few dozen of the
    9.5M weights, all in fc1 and conv2 with |g| < 3e-7. Later steps carry those few differences on through
    the forward pass, so after step 1 we bound how many weights are off (< 0.01%) and by how much (lr per
    step), and require each layer's total update to agree to 1e-3 relative. That the optimizer itself is
    exact is checked by feeding it torch's own gradients (1e-7), and the gradients by comparing them (1e-4).
    """
    size, classes, lr, wd, steps = 48, 10, 1e-3, 1e-4, 3
    net = _torch_net(2, num_classes=classes, image_size=size)
    net.eval()  # dropout off on the torch side; MyNet(dropout_rate=0) with train=False on the jax side
    model = MyNet(num_classes=classes, image_size=size, dropout_rate=0.0)
    params0 = mynet_params_from_torch(net)
    x_BHWC, labels = _batch(3, 4, size, 3, classes)

    def loss_fn(params, batch, rng):
        logits = model.apply(params, batch["image"], train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, {"loss": loss}

    optimizer = make_optimizer("adam", lr, wd)
    state = TrainState.create(jax.tree.map(jnp.asarray, params0), optimizer, seed=0)
    train_step = make_train_step(loss_fn, optimizer)
    batch = {"image": jnp.asarray(x_BHWC), "label": jnp.asarray(labels, jnp.int32)}
    jax_grads0 = jax.jit(jax.grad(loss_fn, has_aux=True))(state.params, batch, None)[0]
    jax_grads0 = jax.tree.map(lambda g, p: np.asarray(g) + wd * p, jax_grads0, params0)

    torch_opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
    x_t, y_t = _nchw(x_BHWC), torch.from_numpy(labels)
    num_weights = sum(x.size for x in jax.tree.leaves(params0))
    for step in range(steps):
        state, metrics = train_step(state, batch)
        torch_opt.zero_grad()
        loss_t = torch.nn.functional.cross_entropy(net(x_t), y_t)
        loss_t.backward()
        if step == 0:
            grads_t = _grads_from_torch(net, wd)
        torch_opt.step()
        # the loss is computed before the step, so it compares the forward pass on identical weights
        np.testing.assert_allclose(float(metrics["loss"]), loss_t.item(), rtol=1e-5)
        want = mynet_params_from_torch(net)
        got = jax.tree.map(np.asarray, state.params)
        if step == 0:
            # the optimizer alone, fed torch's own gradients, reproduces torch's first step to float32 rounding
            loss_grads = jax.tree.map(lambda g, p: g - wd * p, grads_t, params0)
            updates, _ = jax.jit(optimizer.update)(loss_grads, optimizer.init(params0), params0)
            alone = optax.apply_updates(params0, updates)
            for a, w in zip(jax.tree.leaves(alone), jax.tree.leaves(want)):
                np.testing.assert_allclose(np.asarray(a), w, rtol=0, atol=1e-7)
            # the two frameworks' gradients agree to float32 rounding of sums over up to 9,216 terms
            for gj, gt in zip(jax.tree.leaves(jax_grads0), jax.tree.leaves(grads_t)):
                np.testing.assert_allclose(gj, gt, rtol=0, atol=1e-4 * np.abs(gt).max())
        num_off = 0
        for (path, g), w, w0, g1 in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want),
                                        jax.tree.leaves(params0), jax.tree.leaves(grads_t)):
            where = f"step {step + 1} {jax.tree_util.keystr(path)}"
            diff = np.abs(g - w)
            off = diff > 1e-5
            if step == 0:  # every weight off by more than 1e-5 is one whose step is ill-conditioned
                assert (np.abs(g1[off]) < 3e-7).all(), f"{where}: {diff[np.abs(g1) >= 3e-7].max()} apart, |g| >= 3e-7"
            assert diff.max() <= 2 * lr * (step + 1), f"{where}: {diff.max()}"
            rel = np.linalg.norm(g - w) / np.linalg.norm(w - w0)
            assert rel < 1e-3, f"{where}: the updates differ by {rel:.2e} relative"
            num_off += int(off.sum())
        assert num_off < 1e-4 * num_weights, f"step {step + 1}: {num_off} weights off by more than 1e-5"
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(params0)))
    assert moved > 1e-3  # the steps really moved the weights
