"""MyNet vs the seed's PyTorch CNN: same weights give the same logits and the same Adam steps."""

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


def test_adam_steps_match_torch():
    """jaxdl's adam (coupled L2, as PyTorch's Adam(weight_decay)) takes the same steps as torch.optim.Adam.

    In float64 on both sides: in float32 a few dozen of the 9.5M weights have loss gradients that cancel
    their L2 term to |g| ~ eps = 1e-8, where Adam's step lr * g / (|g| + eps) turns summation-order
    rounding (~1e-9) into a visible difference. float64 removes that, so the bound can be flat: every
    weight within 1e-5 of torch's after each of 3 steps (a step moves weights by about lr = 1e-3).
    """
    size, classes, lr, wd, steps = 48, 10, 1e-3, 1e-4, 3
    with jax.enable_x64(True):
        net = _torch_net(2, num_classes=classes, image_size=size).double().eval()  # eval: dropout off
        model = MyNet(num_classes=classes, image_size=size, dropout_rate=0.0)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), mynet_params_from_torch(net))
        x_BHWC, labels = _batch(3, 4, size, 3, classes)
        x_BHWC = x_BHWC.astype(np.float64)

        def loss_fn(params, batch, rng):
            logits = model.apply(params, batch["image"], train=False)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
            return loss, {"loss": loss}

        optimizer = make_optimizer("adam", lr, wd)
        state = TrainState.create(params, optimizer, seed=0)
        train_step = make_train_step(loss_fn, optimizer)
        batch = {"image": jnp.asarray(x_BHWC), "label": jnp.asarray(labels, jnp.int32)}
        torch_opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
        x_t, y_t = _nchw(x_BHWC), torch.from_numpy(labels)
        start = jax.tree.map(np.asarray, params)
        for step in range(steps):
            state, metrics = train_step(state, batch)
            torch_opt.zero_grad()
            loss_t = torch.nn.functional.cross_entropy(net(x_t), y_t)
            loss_t.backward()
            torch_opt.step()
            np.testing.assert_allclose(float(metrics["loss"]), loss_t.item(), rtol=1e-10)
            want = mynet_params_from_torch(net)
            for (path, got), w in zip(jax.tree_util.tree_leaves_with_path(state.params), jax.tree.leaves(want)):
                assert got.dtype == jnp.float64
                np.testing.assert_allclose(np.asarray(got), w, rtol=0, atol=1e-5,
                                           err_msg=f"step {step + 1} {jax.tree_util.keystr(path)}")
        moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(start)))
        assert moved > 2e-3  # three steps of about lr each really moved the weights
