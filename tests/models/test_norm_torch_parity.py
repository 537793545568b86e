"""Batch norm against PyTorch's: BatchNorm2d and BatchNorm1d with the same weights, in training and
evaluation mode (outputs, running mean and variance, every gradient), and an MLP with batch norm
trained by the engine's jitted step against the same network trained by torch.optim.Adam."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdl.models.mlp import MLP  # noqa: E402
from jaxdl.models.norm import BatchNorm  # noqa: E402
from jaxdl.tasks.vector import VectorTask  # noqa: E402
from jaxdl.train import TrainState, make_optimizer, make_train_step  # noqa: E402

torch.set_num_threads(2)
TOL = dict(rtol=1e-5, atol=1e-5)  # float32 on both sides


def _torch_norm(features, dims, seed):
    torch.manual_seed(seed)
    norm = (torch.nn.BatchNorm2d if dims == 4 else torch.nn.BatchNorm1d)(features)  # momentum 0.1, eps 1e-5
    with torch.no_grad():  # away from the 1 / 0 start, so a swapped scale and bias would show
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_(0.0, 0.5)
    return norm


def _to_torch_layout(x):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _from_torch_layout(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


@pytest.mark.parametrize("shape", [(6, 5, 7, 4), (10, 3)], ids=["BatchNorm2d", "BatchNorm1d"])
def test_training_and_evaluation_match_torch(shape):
    features = shape[-1]
    ours = BatchNorm()
    theirs = _torch_norm(features, len(shape), seed=0)
    variables = {"params": {"scale": jnp.asarray(theirs.weight.detach().numpy()),
                            "bias": jnp.asarray(theirs.bias.detach().numpy())},
                 "batch_stats": {"mean": jnp.zeros(features), "var": jnp.ones(features)}}
    rng = np.random.default_rng(1)

    def loss(params, stats, x, g):
        y, updated = ours.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(y * g), (y, updated["batch_stats"])

    for step in range(3):  # three batches: the running averages compound
        x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)  # mean and spread far from 0 and 1
        g = rng.standard_normal(shape).astype(np.float32)
        (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 2), has_aux=True)(
            variables["params"], variables["batch_stats"], jnp.asarray(x), jnp.asarray(g))
        variables = {**variables, "batch_stats": stats}

        x_t = _to_torch_layout(x).requires_grad_(True)
        theirs.zero_grad()
        y_t = theirs.train()(x_t)
        (y_t * _to_torch_layout(g)).sum().backward()

        np.testing.assert_allclose(y, _from_torch_layout(y_t), **TOL)
        np.testing.assert_allclose(stats["mean"], theirs.running_mean.numpy(), **TOL)
        np.testing.assert_allclose(stats["var"], theirs.running_var.numpy(), **TOL)  # unbiased: n / (n - 1)
        np.testing.assert_allclose(grads[1], _from_torch_layout(x_t.grad), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(grads[0]["scale"], theirs.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(grads[0]["bias"], theirs.bias.grad.numpy(), rtol=1e-4, atol=1e-4)

    x = rng.standard_normal(shape).astype(np.float32)
    y_eval = ours.apply(variables, jnp.asarray(x), train=False)
    with torch.no_grad():
        y_eval_t = theirs.eval()(_to_torch_layout(x))
    np.testing.assert_allclose(y_eval, _from_torch_layout(y_eval_t), **TOL)


def test_one_value_per_feature_is_refused_while_training():
    x = jnp.ones((1, 3))
    variables = BatchNorm().init(jax.random.key(0), x, train=False)
    with pytest.raises(ValueError, match="more than one value per feature"):
        BatchNorm().apply(variables, x, train=True, mutable=["batch_stats"])


class _TorchMLP(torch.nn.Module):
    def __init__(self, d_in, hidden, out):
        super().__init__()
        self.dense0, self.norm0 = torch.nn.Linear(d_in, hidden, bias=False), torch.nn.BatchNorm1d(hidden)
        self.dense1 = torch.nn.Linear(hidden, out)

    def forward(self, x):
        return self.dense1(torch.relu(self.norm0(self.dense0(x))))


def test_an_mlp_with_batch_norm_trains_like_torch():
    """Three Adam steps (L2 weight decay) of the engine's jitted step against torch.optim.Adam: params,
    running statistics and evaluation outputs; the optimizer must leave the statistics alone."""
    d_in, hidden, classes, batch = 5, 8, 3, 16
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((batch, d_in)).astype(np.float32) * 2 + 1 for _ in range(3)]
    ys = [rng.integers(0, classes, batch) for _ in range(3)]
    torch.manual_seed(0)
    net = _TorchMLP(d_in, hidden, classes)
    with torch.no_grad():
        net.norm0.weight.uniform_(0.5, 1.5)
        net.norm0.bias.normal_(0.0, 0.5)
    t = lambda p: jnp.asarray(p.detach().numpy())
    variables = {"params": {"dense0": {"kernel": t(net.dense0.weight).T},
                            "norm0": {"scale": t(net.norm0.weight), "bias": t(net.norm0.bias)},
                            "dense1": {"kernel": t(net.dense1.weight).T, "bias": t(net.dense1.bias)}},
                 "batch_stats": {"norm0": {"mean": jnp.zeros(hidden), "var": jnp.ones(hidden)}}}
    task = VectorTask(MLP((hidden,), classes, "relu", "batch"), "softmax_ce")
    opt = make_optimizer("adam", 1e-2, 1e-2)  # weight decay as L2 in the gradient, as torch's Adam
    state = TrainState.create(variables, opt, 0)
    step = make_train_step(task.loss, opt)
    torch_opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-2)
    for x, y in zip(xs, ys):
        state, _ = step(state, {"x": jnp.asarray(x), "y": jnp.asarray(y)})
        net.train()
        torch_opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        torch_opt.step()
    p = state.params
    np.testing.assert_allclose(p["params"]["dense0"]["kernel"], t(net.dense0.weight).T, **TOL)
    np.testing.assert_allclose(p["params"]["norm0"]["scale"], t(net.norm0.weight), **TOL)
    np.testing.assert_allclose(p["params"]["norm0"]["bias"], t(net.norm0.bias), **TOL)
    np.testing.assert_allclose(p["params"]["dense1"]["kernel"], t(net.dense1.weight).T, **TOL)
    np.testing.assert_allclose(p["batch_stats"]["norm0"]["mean"], net.norm0.running_mean.numpy(), **TOL)
    np.testing.assert_allclose(p["batch_stats"]["norm0"]["var"], net.norm0.running_var.numpy(), **TOL)
    x = rng.standard_normal((4, d_in)).astype(np.float32)
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(task.model.apply(p, jnp.asarray(x)), expected, **TOL)
