"""jaxdl.load: each family's inference reproduces what its training run's evaluation computed."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from PIL import Image

import jaxdl
from jaxdl.data.augment import ImagePreprocess
from jaxdl.data.images import load_digits
from jaxdl.data.text import eval_windows, load_text
from jaxdl.data import sequence_tasks
from jaxdl.data.batches import eval_batches
from jaxdl.errors import UsageError
from jaxdl.models import MODELS, build, describe
from jaxdl.tasks.classification import ImageClassifier
from tests.experiments.workdir import latest_params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_model_class_is_registered_and_round_trips_through_json():
    from jaxdl.models import DecoderLM, MLP, RecurrentLM
    import jax.numpy as jnp

    for module in (DecoderLM(61, num_layers=2, num_kv_heads=2, dtype=jnp.bfloat16), MLP((64, 32), 10, "gelu"),
                   RecurrentLM(61, "gru", 8, 16, 1)):
        again = build(json.loads(json.dumps(describe(module))))
        assert again == module and hash(again) == hash(module)
    assert {"MyNet", "MLP", "RecurrentLM", "DecoderLM", "EncoderDecoder", "TextConditionedUNet"} <= set(MODELS)
    with pytest.raises(ValueError, match="unknown model class"):
        build({"class": "os.system", "fields": {}})


def test_import_jaxdl_initialises_no_backend():
    code = "import sys, jaxdl; assert 'jax' not in sys.modules and callable(jaxdl.load)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_classifier_reproduces_the_runs_evaluation(cnn_run):
    workdir, summary = cnn_run
    model = jaxdl.load(workdir, "latest")  # the summary is the last evaluation's
    info = json.loads((workdir / "model.json").read_text())
    assert info["format"] == 1 and info["family"] == "classifier" and info["model"]["class"] == "MyNet"
    assert model.step == summary["steps"] and model.num_params == summary["num_params"]
    assert set(model.params) == {"params"}  # the params alone: no optimizer state is restored
    test = load_digits().test
    probs = model.predict(test.images)
    assert probs.shape == (360, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == test.labels).mean() == summary["test_accuracy"]
    # per example, the same predictions as the engine's evaluation of the checkpoint's params
    c = info["classifier"]
    task = ImageClassifier(model.model, ImagePreprocess(c["input_size"], 3, tuple(c["mean"]), tuple(c["std"])))
    run = task.evaluate(latest_params(workdir), eval_batches({"image": test.images, "label": test.labels}, 64))
    np.testing.assert_array_equal(probs.argmax(1), run["outputs"]["predictions"])


def test_classifier_takes_any_size_channels_and_dtype(cnn_run, tmp_path):
    model = jaxdl.load(cnn_run[0])
    images = load_digits().test.images[:5]  # uint8 (5, 8, 8, 1)
    want = model.predict(images)
    np.testing.assert_allclose(model.predict(images[..., 0]), want, atol=1e-6)  # (N, H, W)
    np.testing.assert_allclose(model.predict(images[0, :, :, 0]), want[:1], atol=1e-6)  # (H, W)
    np.testing.assert_allclose(model.predict(images.astype(np.float32) / 255), want, atol=1e-5)  # floats in [0, 1]
    np.testing.assert_allclose(model.predict(np.repeat(images, 3, -1)), want, atol=1e-5)  # RGB -> grey by luma
    big = np.repeat(np.repeat(images, 4, 1), 4, 2)  # 32x32, resized back to the 8x8 of training
    assert model.predict(big).argmax(1).tolist() == want.argmax(1).tolist()
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image[..., 0]).save(paths[-1])
    np.testing.assert_allclose(model.predict_files(paths), want, atol=1e-6)
    paper = np.full((90, 60), 200, np.uint8)  # a photo: dark ink on grey paper, off centre
    paper[20:60, 10:50] = 200 - np.kron(images[0, :, :, 0], np.ones((5, 5), np.uint8)) * (170 / 255)
    assert model.predict(paper, invert=True, crop=True).argmax() == want[0].argmax()
    for bad in (np.zeros((2, 8, 8, 5), np.uint8), np.zeros((0, 8, 8, 1)), np.full((8, 8), np.nan), np.zeros(3),
                images.astype(np.float32), np.full((8, 8), 300), [np.zeros((8, 8)), np.zeros((9, 9))]):
        with pytest.raises(UsageError):
            model.predict(bad)
    (tmp_path / "not.png").write_text("text")
    with pytest.raises(UsageError, match="cannot read image"):
        model.predict_files([str(tmp_path / "not.png")])


def test_mlp_runs_load_as_a_classifier_and_a_vector_model(digits_mlp_run, xor_run):
    workdir, summary = digits_mlp_run
    test = load_digits().test
    for member in (0, 1):  # an ensemble's models, one at a time
        model = jaxdl.load(workdir, "latest", member=member)
        accuracy = (model.predict(test.images).argmax(1) == test.labels).mean()
        assert accuracy == pytest.approx(summary["per_model_test_accuracy"][member], abs=1e-6)
    with pytest.raises(UsageError, match="member"):
        jaxdl.load(workdir, member=2)
    workdir, summary = xor_run
    xor = jaxdl.load(workdir, "latest")
    p = xor.predict([[0, 0], [0, 1], [1, 0], [1, 1]])[:, 0]
    assert ((p > 0.5) == [0, 1, 1, 0]).mean() == summary["test_accuracy"]


def _validation_loss(model, data, seq_len):
    nll, n = 0.0, 0
    for batch in eval_windows(data.valid, seq_len, 8):
        logits = model.logits(batch["tokens"][:, :-1])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["tokens"][:, 1:])
        nll, n = nll + float((np.asarray(losses) * batch["mask"]).sum()), n + int(batch["mask"].sum())
    return nll / n


@pytest.mark.parametrize("run", ["rnn_run", "gpt_run"])
def test_language_model_reproduces_validation_loss_and_sample(run, request):
    workdir, summary = request.getfixturevalue(run)
    model = jaxdl.load(workdir, "latest")
    assert model.family == "language_model" and model.tokenizer.vocab_size == model.info["model"]["fields"]["vocab_size"]
    data = load_text("shakespeare")
    assert _validation_loss(model, data, 16) == pytest.approx(summary["val_loss"], abs=1e-5)
    length = len(summary["sample"]) - 1  # the run's sample: a newline, then --sample-length tokens
    assert "\n" + model.generate("", length, temperature=0.8, seed=0) == summary["sample"]
    greedy = model.generate("ROMEO:", 5, temperature=0)
    assert len(greedy) == 5 and greedy == model.generate("ROMEO:", 5, temperature=0, seed=7)
    with pytest.raises(UsageError, match="vocabulary"):
        model.generate("\u03a9", 5)


def test_transformer_refuses_more_tokens_than_its_context(gpt_run):
    model = jaxdl.load(gpt_run[0])
    with pytest.raises(UsageError, match="context"):
        model.logits(np.zeros((1, 17), np.int32))
    assert len(model.generate("\n", 40)) == 40  # generation slides past the context


def test_seq2seq_transduce_matches_the_runs_greedy_outputs(seq2seq_run):
    workdir, summary = seq2seq_run
    model = jaxdl.load(workdir, "latest")
    test = sequence_tasks.held_out("reverse", 40, 1, 8, 0)  # the run's own held-out set (seed 0)
    sources = [sequence_tasks.decode(s) for s in test.batch["source"]]
    outputs = model.transduce(sources)
    targets = [sequence_tasks.target_for("reverse", s) for s in sources]
    assert np.mean([o == t for o, t in zip(outputs, targets)]) == pytest.approx(summary["exact_match"])
    assert model.transduce(sources[0]) == outputs[0]
    with pytest.raises(UsageError, match="does not know"):
        model.transduce("12a")


def test_diffusion_samples_are_the_runs_own_bit_for_bit(diffusion_run):
    workdir, summary = diffusion_run
    model = jaxdl.load(workdir, "latest")
    assert model.info["params"] == "ema" and model.info["diffusion"]["timesteps"] == 50
    with np.load(workdir / "samples.npz") as npz:
        drawn = npz["images"]
    images = model.sample(model.class_prompts, num=2, steps=3, seed=0)
    assert images.shape == (10, 2, 8, 8, 1)
    np.testing.assert_array_equal(images.reshape(drawn.shape), drawn)
    with pytest.raises(UsageError):
        model.sample(["a seven"], steps=51)


def test_bad_workdirs_and_checkpoints_are_usage_errors(cnn_run, tmp_path):
    with pytest.raises(UsageError, match="no model.json"):
        jaxdl.load(tmp_path)
    with pytest.raises(UsageError, match="not a directory"):
        jaxdl.load(tmp_path / "missing")
    (tmp_path / "model.json").write_text((cnn_run[0] / "model.json").read_text())
    with pytest.raises(UsageError, match="no checkpoint"):
        jaxdl.load(tmp_path)
    with pytest.raises(UsageError, match="no checkpoint of step 5"):
        jaxdl.load(cnn_run[0], 5)
    good = json.loads((cnn_run[0] / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**good, "format": 99}))
    with pytest.raises(UsageError, match="newer"):
        jaxdl.load(tmp_path)
    for damage in ({"model": 3}, {"params": "adam"}, {"members": "two"},
                   {"model": {"class": "MyNet", "fields": {"dropout_rate": {"dtype": "object"}}}}):
        (tmp_path / "model.json").write_text(json.dumps({**good, **damage}))
        with pytest.raises(UsageError, match="model.json"):
            jaxdl.load(tmp_path)


def test_a_run_with_a_relative_checkpoint_dir_loads_from_anywhere(tmp_path, monkeypatch):
    from experiments import mlp

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    summary = mlp.main(["--task", "xor", "--epochs", "1", "--checkpoint-dir", "ckpts", "--workdir", "run"])
    monkeypatch.chdir(tmp_path)
    model = jaxdl.load("a/run")
    assert model.step == summary["steps"] and model.info["checkpoints"]["directory"] == str(tmp_path / "a" / "ckpts")


def test_a_run_sharded_over_eight_devices_loads_onto_one(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "experiments/mlp.py", "--task", "digits", "--epochs", "1", "--hidden", "128",
                    "--mesh", "data=2,fsdp=4", "--workdir", str(tmp_path)], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "8 devices" in summary["device"] and len(jax.devices()) == 1
    model = jaxdl.load(tmp_path)
    test = load_digits().test
    assert (model.predict(test.images).argmax(1) == test.labels).mean() == pytest.approx(summary["test_accuracy"])


def test_best_is_the_best_ranked_checkpoint_not_the_latest(tmp_path):
    import jax.numpy as jnp
    import optax

    from jaxdl.train.checkpoint import Checkpoints, restore_params
    from jaxdl.train.state import TrainState

    checkpoints = Checkpoints(str(tmp_path), keep=3, best_metric="test/accuracy", best_mode="max")
    for step, accuracy in ((1, 0.9), (2, 0.5)):
        state = TrainState.create({"w": jnp.full((3,), float(step))}, optax.sgd(0.1), 0)
        checkpoints.save(state.replace(step=jnp.int32(step)), {}, {"test/accuracy": accuracy})
    checkpoints.close()
    for which, step in (("best", 1), ("latest", 2), (2, 2), (1, 1)):
        params, got = restore_params(str(tmp_path), which, ("params",), "test/accuracy", "max")
        assert got == step and float(params["w"][0]) == step, which


@pytest.mark.parametrize("run", ["cnn_run", "xor_run", "rnn_run", "seq2seq_run", "diffusion_run"])
def test_a_model_json_that_does_not_fit_the_checkpoint_is_refused(run, request, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(request.getfixturevalue(run)[0], workdir)
    info = json.loads((workdir / "model.json").read_text())
    fields = info["model"]["fields"]
    if "num_classes" in fields:  # MyNet: one more output class than its fc2 has
        fields["num_classes"] += 1
    elif "hidden" in fields and "out" in fields:  # MLP: a wider first hidden layer
        fields["hidden"] = [fields["hidden"][0] + 1, *fields["hidden"][1:]]
    elif "vocab_size" in fields:  # language and seq2seq models: one more token
        fields["vocab_size"] += 1
    else:  # the text-conditioned U-Net: a wider text encoder
        fields["text"]["d_model"] *= 2
    (workdir / "model.json").write_text(json.dumps(info))
    with pytest.raises(UsageError, match="the checkpoint does not fit the model in model.json") as e:
        jaxdl.load(workdir)
    assert "checkpoint (" in str(e.value) and "model.json (" in str(e.value), e.value
