"""The engine on 8 devices: data and FSDP meshes match one device, the state is sharded by the rule,
checkpoints restore across meshes. Needs 8 devices: test_multidevice.py runs this file in a process
with XLA_FLAGS=--xla_force_host_platform_device_count=8 (8 CPU devices); alone, it is skipped."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.data.batches import epoch_batches
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step, parallel
from jaxdl.train.checkpoint import Checkpoints
from jaxdl.train.loop import compile_step

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (see test_multidevice.py)")

N, D, H, BATCH = 256, 32, 256, 32
TOL = dict(rtol=2e-5, atol=2e-6)  # float32 sums split over devices add up in another order


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    return {"x": x, "y": (np.sin(x[:, :3].sum(1)) > 0).astype(np.float32)}


def _loss(params, batch, rng):
    h = jax.nn.relu(batch["x"] @ params["w1"] + params["b1"])
    h = h * jax.random.bernoulli(rng, 0.9, h.shape) / 0.9  # dropout: the same mask however it is sharded
    logits = (h @ params["w2"])[:, 0]
    loss = jnp.mean(jnp.logaddexp(0.0, logits) - batch["y"] * logits)
    return loss, {"loss": loss}


def _params():
    k1, k2 = jax.random.split(jax.random.key(1))
    return {"w1": jax.random.normal(k1, (D, H)) / np.sqrt(D), "b1": jnp.zeros((H,)),
            "w2": jax.random.normal(k2, (H, 1)) / np.sqrt(H)}


def _run(workdir, mesh, epochs=2):
    data = _data()
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, lr=3e-3, workdir=str(workdir), mesh=mesh, log_every=4)
    opt = make_optimizer("adam", cfg.lr, cfg.weight_decay)
    state = TrainState.create(_params(), opt, cfg.seed)
    return fit(state, make_train_step(_loss, opt), epoch_batches(data, BATCH, cfg.seed),
               N // BATCH, lambda p: {"loss": float(_loss(p, data, jax.random.key(0))[0])}, cfg)


@functools.lru_cache(maxsize=None)
def _one_device(tmp_root):
    return _run(f"{tmp_root}/one", "data=1")


@pytest.mark.parametrize("mesh", ["data=8", "data=4,fsdp=2", "fsdp=8"])
def test_training_on_8_devices_ends_where_one_device_does(tmp_path_factory, mesh):
    one = _one_device(str(tmp_path_factory.getbasetemp()))
    many = _run(tmp_path_factory.mktemp("many"), mesh)
    assert many.steps == one.steps == 2 * N // BATCH
    for a, b in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(many.state.params)):
        np.testing.assert_allclose(a, b, **TOL)


def test_the_fsdp_rule_shards_big_arrays_and_the_step_keeps_and_donates_them():
    cfg = TrainConfig(batch_size=BATCH, mesh="data=2,fsdp=4")
    opt = make_optimizer("adam", 1e-3)
    step, state, to_global = compile_step(make_train_step(_loss, opt), TrainState.create(_params(), opt, 0), cfg, False)
    w1 = state.params["w1"]
    assert w1.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")  # H=256, the largest dim, split 4 ways
    assert {s.data.shape for s in w1.addressable_shards} == {(D, H // 4)}
    assert state.params["b1"].sharding.spec == jax.sharding.PartitionSpec()  # 256 elements: replicated
    moments = [x for path, x in jax.tree_util.tree_leaves_with_path(state.opt_state) if "w1" in jax.tree_util.keystr(path)]
    assert len(moments) == 2 and all(m.sharding == w1.sharding for m in moments)  # Adam's mu, nu follow w1
    batch = to_global(epoch_batches(_data(), BATCH, 0)[0], True)
    batch_in = step.lower(state, batch).compile().input_shardings[0][1]["x"]
    assert batch_in.shard_shape((BATCH, D)) == (BATCH // 8, D)  # the examples split over all 8 devices
    new, metrics = step(state, batch)
    assert new.params["w1"].sharding == w1.sharding and w1.is_deleted()  # out sharding = in sharding: donated
    assert np.isfinite(float(metrics["loss"]))


def _sharded_state(mesh_spec):
    opt = make_optimizer("adam", 1e-3)
    state = TrainState.create(_params(), opt, 0)
    mesh = parallel.make_mesh(mesh_spec)
    return parallel.place(state, parallel.state_shardings(state, mesh))


@pytest.mark.parametrize("saved_on, restored_on", [("data=8", "data=1"), ("data=1", "data=4"), ("data=8", "fsdp=8")])
def test_a_checkpoint_restores_onto_another_mesh(tmp_path, saved_on, restored_on):
    original = _sharded_state(saved_on)
    original = original.replace(params=jax.tree.map(lambda x: x + 1.5, original.params), step=original.step + 7)
    ckpt = Checkpoints(str(tmp_path / "checkpoints"))
    ckpt.save(original, {"round": 0, "metrics": [{"loss": 0.25}]})
    ckpt.close()
    target = _sharded_state(restored_on)
    restored, loop = Checkpoints(str(tmp_path / "checkpoints")).restore_or(target)
    assert loop == {"round": 0, "metrics": [{"loss": 0.25}]}
    for a, b, t in zip(jax.tree.leaves(original), jax.tree.leaves(restored), jax.tree.leaves(target)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert b.sharding == t.sharding  # laid out for the new mesh, not the one that wrote it


def test_a_run_resumed_on_another_mesh_continues_where_it_stopped(tmp_path_factory):
    one = _one_device(str(tmp_path_factory.getbasetemp()))
    workdir = tmp_path_factory.mktemp("moved")
    _run(workdir, "data=8", epochs=1)
    resumed = _run(workdir, "data=2,fsdp=4", epochs=2)
    for a, b in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_allclose(a, b, **TOL)


def _batch_norm_run(workdir, mesh):
    """MyNet with batch norm (8x8 grey images, no dropout), trained through the engine on `mesh`."""
    from jaxdl.models.cnn import MyNet
    from jaxdl.tasks.model_state import apply_training

    model = MyNet(num_classes=3, image_size=8, in_channels=1, dropout_rate=0.0, norm="batch")
    rng = np.random.default_rng(0)
    data = {"image": rng.normal(2.0, 3.0, (128, 8, 8, 1)).astype(np.float32), "label": rng.integers(0, 3, 128)}

    def loss(params, batch, key):
        logits, model_state = apply_training(model, params, batch["image"])
        loss = jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, batch["label"][:, None], -1)[:, 0])
        return loss, {"loss": loss, **model_state}

    cfg = TrainConfig(epochs=2, batch_size=BATCH, lr=1e-2, workdir=str(workdir), mesh=mesh, log_every=4)
    opt = make_optimizer("sgd", cfg.lr)  # not Adam, whose first steps turn float rounding into whole steps
    state = TrainState.create(model.init(jax.random.key(0), data["image"][:2]), opt, cfg.seed)
    return fit(state, make_train_step(loss, opt), epoch_batches(data, BATCH, cfg.seed), 128 // BATCH,
               lambda p: {"loss": 0.0}, cfg).state.params


@pytest.mark.parametrize("mesh", ["data=8", "data=4,fsdp=2"])
def test_batch_norm_statistics_on_8_devices_are_those_of_one_device(tmp_path, mesh):
    """The batch statistics are the global batch's, however it is split: the running mean and variance
    (and the params) after 8 steps equal one device's."""
    one, many = _batch_norm_run(tmp_path / "one", "data=1"), _batch_norm_run(tmp_path / "many", mesh)
    assert set(one["batch_stats"]) == {"norm1", "norm2", "norm3"}
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    moved = np.abs(np.asarray(one["batch_stats"]["norm1"]["mean"])).max()
    assert moved > 0.1  # the statistics did move away from their zero start
