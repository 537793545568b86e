"""--init-from: a new run starts from a trained one; heads for other classes or vocabularies start fresh;
model.json refuses a resume that would change the model."""

import json

import jax
import numpy as np
import pytest

from experiments import cnn, rnn
from jaxdl.data.augment import ImagePreprocess
from jaxdl.errors import UsageError
from jaxdl.models import MyNet
from jaxdl.tasks.classification import ImageClassifier
from jaxdl.tasks.run_info import classifier_info
from jaxdl.train.warm_start import warm_start
from tests.data.test_images import write_folder
from tests.experiments.workdir import exits_2, exits_2_untouched, latest_params
from tests.inference.conftest import CNN, RNN


def _fresh(num_classes, class_names):
    model = MyNet(num_classes, 8, 3)
    task = ImageClassifier(model, ImagePreprocess(8, 3, (0.3,), (0.4,)))
    example = np.zeros((1, 8, 8, 1), np.uint8)
    params = task.init(jax.random.key(5), {"image": example})
    info = classifier_info(model, params, task.preprocess, "x", class_names, (8, 8, 1))
    init = lambda m: ImageClassifier(m, task.preprocess).init(jax.random.key(5), {"image": example})
    return params, info, init, model


def test_matching_arrays_come_from_the_run_and_a_new_head_starts_fresh(cnn_run, capsys):
    trained = latest_params(cnn_run[0])  # the best checkpoint is the last one of this short run
    params, info, init, model = _fresh(3, ["ant", "cat", "dog"])
    started = warm_start(str(cnn_run[0]), params, info, init, model)
    out = capsys.readouterr().out
    assert "8 of 10 arrays whole" in out and "params/fc2/kernel (0 of 3 rows)" in out
    np.testing.assert_array_equal(started["params"]["conv1"]["kernel"], trained["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(started["params"]["fc2"]["kernel"], params["params"]["fc2"]["kernel"])


def test_head_rows_follow_the_class_names(cnn_run, capsys):
    trained = latest_params(cnn_run[0])["params"]["fc2"]
    params, info, init, model = _fresh(3, ["7", "3", "cat"])  # two digits the run knows, one it does not
    started = warm_start(str(cnn_run[0]), params, info, init, model)["params"]["fc2"]
    assert "params/fc2/kernel (2 of 3 rows)" in capsys.readouterr().out
    np.testing.assert_array_equal(started["kernel"][:, :2], trained["kernel"][:, [7, 3]])
    np.testing.assert_array_equal(started["bias"][2], params["params"]["fc2"]["bias"][2])
    params, info, init, model = _fresh(10, list("abcdefghij"))  # ten classes, none of them the digits
    started = warm_start(str(cnn_run[0]), params, info, init, model)
    assert "params/fc2/bias (0 of 10 rows)" in capsys.readouterr().out
    np.testing.assert_array_equal(started["params"]["fc2"]["bias"], params["params"]["fc2"]["bias"])
    params, info, init, model = _fresh(10, [str(i) for i in range(10)])  # the same classes: all carry over
    warm_start(str(cnn_run[0]), params, info, init, model)
    assert "10 of 10 arrays whole" in capsys.readouterr().out


def test_fine_tune_mynet_on_a_folder(cnn_run, tmp_path, capsys):
    root = write_folder(tmp_path / "imgs", per_class=12, size=20)
    summary = cnn.main([*CNN, "--batch-size", "8", "--epochs", "1", "--dataset", f"folder:{root}",
                        "--init-from", str(cnn_run[0]), "--workdir", str(tmp_path / "mine")])
    assert "by shared label" in capsys.readouterr().out and summary["steps"] == 4  # from step 0: 36 images / 8
    info = json.loads((tmp_path / "mine" / "model.json").read_text())
    assert info["classifier"]["class_names"] == ["ant", "cat", "dog"] and info["model"]["fields"]["num_classes"] == 3


def test_fine_tune_a_language_model_on_a_text_file(rnn_run, tmp_path, capsys):
    text = tmp_path / "mine.txt"
    text.write_text("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20)
    rnn.main([*RNN, "--dataset", f"text:{text}", "--init-from", str(rnn_run[0]), "--workdir", str(tmp_path / "a")])
    out = capsys.readouterr().out
    assert "in the vocabulary of" in out and "7 of 7 arrays whole" in out  # Shakespeare's characters cover it
    text.write_text("\u00e9t\u00e9 \u00e0 Paris\n" * 200)  # characters the trained vocabulary lacks
    rnn.main([*RNN, "--dataset", f"text:{text}", "--init-from", str(rnn_run[0]), "--workdir", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "new vocabulary" in out and "params/embedding/embedding (" in out and " rows)" in out
    # rerun: it resumes from its own checkpoint (the run it started from is not read), with or without the flag
    for flags in (["--init-from", str(rnn_run[0])], []):
        rnn.main([*RNN, "--dataset", f"text:{text}", *flags, "--workdir", str(tmp_path / "b")])
        out = capsys.readouterr().out
        assert "Already trained" in out and "Initialised from" not in out


def test_another_family_is_refused_and_nothing_is_written(rnn_run, tmp_path, capsys):
    err = exits_2(cnn.main, [*CNN, "--init-from", str(rnn_run[0]), "--workdir", str(tmp_path / "x")], capsys)
    assert "language_model run (RecurrentLM)" in err and not (tmp_path / "x").exists()
    err = exits_2(cnn.main, [*CNN, "--init-from", str(tmp_path), "--workdir", str(tmp_path / "x")], capsys)
    assert "no model.json" in err
    err = exits_2(cnn.main, [*CNN, "--init-from", str(tmp_path / "x"), "--workdir", str(tmp_path / "x")], capsys)
    assert "own --workdir" in err
    from experiments import mlp

    err = exits_2(mlp.main, ["--task", "xor", "--ensemble", "2", "--init-from", str(rnn_run[0]),
                             "--workdir", str(tmp_path / "x")], capsys)
    assert "--ensemble" in err and not (tmp_path / "x").exists()


def test_a_resume_that_changes_the_model_is_refused_naming_the_field(cnn_run, tmp_path, capsys):
    err = exits_2_untouched(cnn.main, [*CNN, "--pool", "avg"], cnn_run[0], tmp_path, capsys)
    assert "trained with other settings: --pool 'max' -> 'avg'" in err, err
