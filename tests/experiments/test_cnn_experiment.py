"""experiments/cnn.py end to end at small sizes: accuracy, the workdir contract, resume, data specs, bad input."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import cnn
from tests.experiments.workdir import exits_2, latest_params, snapshot
from tests.data.test_images import write_folder

SMALL = ["--image-size", "8", "--batch-size", "32", "--log-every", "5"]


def test_digits_reaches_90_percent_and_writes_the_contract(tmp_path):
    summary = cnn.main(["--image-size", "16", "--epochs", "4", "--workdir", str(tmp_path)])
    assert summary["test_accuracy"] >= 0.90, summary
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("test_accuracy", "test_loss", "train_examples_per_sec", "compile_seconds", "num_params",
                "epochs", "dataset", "device", "wall_seconds", "steps"):
        assert key in on_disk, key
    assert on_disk["epochs"] == 4 and on_disk["dataset"] == "digits"
    assert on_disk["num_params"] == 896 + 18_496 + 73_856 + (4 * 4 * 128 * 512 + 512) + 5_130
    for picture in ("curves.png", "confusion_matrix.png"):
        assert (tmp_path / picture).stat().st_size > 5_000
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 8


def test_two_epochs_equal_one_epoch_resumed_for_a_second(tmp_path):
    cnn.main([*SMALL, "--epochs", "2", "--workdir", str(tmp_path / "a")])
    cnn.main([*SMALL, "--epochs", "1", "--workdir", str(tmp_path / "b")])
    cnn.main([*SMALL, "--epochs", "2", "--workdir", str(tmp_path / "b")])
    a, b = latest_params(tmp_path / "a"), latest_params(tmp_path / "b")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_batch_norm_resumes_exactly_and_its_statistics_serve_inference(tmp_path, capsys):
    """--norm batch: 2 epochs = 1 + 1 resumed (the running statistics are checkpointed), and the loaded
    model predicts with them: what `jaxdl.load` gives is MyNet in evaluation mode on those statistics."""
    import jaxdl
    from jaxdl.commands import main as jaxdl_main
    from jaxdl.data.images import load_images

    norm = ["--norm", "batch"]
    cnn.main([*SMALL, *norm, "--epochs", "2", "--workdir", str(tmp_path / "a")])
    cnn.main([*SMALL, *norm, "--epochs", "1", "--workdir", str(tmp_path / "b")])
    cnn.main([*SMALL, *norm, "--epochs", "2", "--workdir", str(tmp_path / "b")])
    a, b = latest_params(tmp_path / "a"), latest_params(tmp_path / "b")
    assert set(a["batch_stats"]) == {"norm1", "norm2", "norm3"}
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)

    trained = jaxdl.load(str(tmp_path / "a"), checkpoint="latest")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert trained.num_params == trained.info["num_params"] == summary["num_params"]  # statistics not counted
    images = load_images("digits", None, 8).test.images[:16]
    x = trained.preprocess.eval(images)
    expected = jax.nn.softmax(trained.model.apply(a, x, train=False))
    np.testing.assert_allclose(trained.predict(images), expected, rtol=1e-5, atol=1e-6)
    unused = {**a, "batch_stats": jax.tree.map(np.zeros_like, a["batch_stats"])}
    assert not np.allclose(trained.model.apply(unused, x, train=False), trained.model.apply(a, x, train=False))

    from jaxdl.inference.export import export

    export(trained, str(tmp_path / "mynet.jax"), platforms=("cpu",))  # the statistics baked in with the weights
    exported = jax.export.deserialize((tmp_path / "mynet.jax").read_bytes())
    np.testing.assert_allclose(jax.nn.softmax(exported.call(x)), expected, rtol=1e-5, atol=1e-6)

    capsys.readouterr()
    err = exits_2(jaxdl_main, ["convert", "--to", "torch", str(tmp_path / "a"), "--out", str(tmp_path / "w.safetensors")],
                  capsys)
    assert "batch norm" in err and not (tmp_path / "w.safetensors").exists()


def test_batch_norm_with_per_example_gradients_is_refused(tmp_path, capsys):
    err = exits_2(cnn.main, [*SMALL, "--norm", "batch", "--dp-clip", "1", "--workdir", str(tmp_path / "run")], capsys)
    assert "batch norm" in err and "--dp-clip" in err


def test_folder_dataset_trains(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=12, size=20)
    summary = cnn.main([*SMALL, "--batch-size", "8", "--epochs", "2", "--dataset", f"folder:{root}",
                        "--workdir", str(tmp_path / "run")])
    assert summary["dataset"] == f"folder:{root}" and summary["steps"] == 8
    assert summary["test_accuracy"] > 0.5  # three classes of clearly different brightness


def test_tfds_mnist_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=64):
        summary = cnn.main(["--dataset", "mnist", "--image-size", "12", "--batch-size", "32", "--epochs", "1",
                            "--workdir", str(tmp_path)])
    assert summary["dataset"] == "mnist" and summary["steps"] == 2 and 0 <= summary["test_accuracy"] <= 1


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished")
    cnn.main([*SMALL, "--epochs", "1", "--workdir", str(workdir)])
    return workdir


@pytest.mark.parametrize("argv,match", [
    (["--dataset", "imagenet_nope_xyz"], "unknown --dataset"),
    (["--dataset", "folder:/no/such/dir"], "no such directory"),
    (["--num-classes", "5"], "outside 0..4"),
    (["--image-size", "30"], "multiple of 4"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--colour", "red"], "unrecognized arguments"),
    (["--lr", "high"], "wants float"),
    (["--lr", "nan"], "wants float, got 'nan': give a finite number"),
    (["--brightness", "1.5"], "--brightness must be in [0, 1)"),
    (["--batch-size", "16", "--epochs", "2"], "--batch-size 32 -> 16"),
    (["--seed", "7", "--epochs", "2"], "--seed 0 -> 7"),
    (["--pool", "avg", "--epochs", "2"], "--pool 'max' -> 'avg'"),
    (["--rotation", "5", "--epochs", "2"], "--rotation 10.0 -> 5.0"),
    (["--norm", "batch", "--epochs", "2"], "--norm 'none' -> 'batch'"),
    (["--norm", "group"], "unknown --norm 'group'"),
])
def test_bad_input_exits_2_and_leaves_a_finished_run_untouched(tmp_path, capsys, finished_run, argv, match):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    before = snapshot(workdir)
    capsys.readouterr()
    err = exits_2(cnn.main, [*SMALL, *argv, "--workdir", str(workdir)], capsys)
    assert match in err
    assert snapshot(workdir) == before


@pytest.mark.parametrize("case", ["empty", "no_classes", "unreadable"])
def test_bad_folders_exit_2(tmp_path, capsys, case):
    root = tmp_path / "imgs"
    if case == "empty":
        root.mkdir()
    elif case == "no_classes":
        (root / "train").mkdir(parents=True)
    else:
        write_folder(root)
        (root / "test" / "dog" / "bad.jpg").write_bytes(b"\x00garbage")
    err = exits_2(cnn.main, ["--dataset", f"folder:{root}", "--workdir", str(tmp_path / "run")], capsys)
    assert ("bad.jpg" in err) if case == "unreadable" else ("train" in err)


def test_workdir_of_another_model_is_refused_and_left_untouched(tmp_path, capsys):
    cnn.main([*SMALL, "--epochs", "1", "--workdir", str(tmp_path)])
    before = snapshot(tmp_path)
    capsys.readouterr()
    err = exits_2(cnn.main, [*SMALL, "--image-size", "12", "--epochs", "2", "--workdir", str(tmp_path)], capsys)
    assert "trained with other settings: --image-size 8 -> 12" in err, err
    assert snapshot(tmp_path) == before


def test_command_line_bad_input_has_no_traceback(tmp_path):
    script = os.path.join(os.path.dirname(cnn.__file__), "cnn.py")
    p = subprocess.run([sys.executable, script, "--image-size", "10", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "multiple of 4" in p.stderr
