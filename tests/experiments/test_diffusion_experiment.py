"""experiments/diffusion.py end to end at small sizes: the workdir contract, --sample-only, bad input."""

import json
import shutil

import numpy as np
import pytest

from experiments import diffusion
from tests import run_store
from tests.experiments.workdir import exits_2, exits_2_untouched, snapshot
from tests.inference.conftest import DIFFUSION

RUN = DIFFUSION  # the inference session's tiny run: trained once for both (tests/run_store.py); later flags win
SUMMARY_KEYS = ("sample_accuracy", "judge_test_accuracy", "frechet_distance", "frechet_floor",
                "sampling_images_per_sec", "num_params", "steps", "wall_seconds", "dataset", "device")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished")
    run_store.run("diffusion", [*RUN, "--workdir", str(workdir)])
    return workdir


def test_training_writes_the_contract(finished):
    summary = json.loads((finished / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in summary, key
    assert summary["steps"] == 4 and summary["dataset"] == "digits" and summary["image_size"] == 8
    assert 0 <= summary["sample_accuracy"] <= 1 and 0 < summary["judge_test_accuracy"] <= 1
    assert summary["frechet_distance"] > 0 and summary["frechet_floor"] > 0 and summary["sampling_images_per_sec"] > 0
    for name in ("metrics.jsonl", "curves.png", "samples.png", "config.json", "model.json", "judge/checkpoints"):
        assert (finished / name).exists(), name
    events = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["split"] == "test"] == [2, 4]
    with np.load(finished / "samples.npz") as npz:  # default prompts: one per class
        images, labels, prompts = npz["images"], npz["labels"], npz["prompts"]
    assert images.shape == (20, 8, 8, 1) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 2))
    assert prompts[0] == "a handwritten zero" and prompts[-1] == "a handwritten nine"


def test_sample_only_draws_the_prompts_from_the_checkpoint(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    checkpoints = snapshot(workdir / "checkpoints")
    summary = diffusion.main([*RUN, "--sample-only", "--prompt", "a handwritten seven|the digit 3|a cat",
                              "--workdir", str(workdir)])
    assert summary["steps"] == 4
    assert snapshot(workdir / "checkpoints") == checkpoints  # nothing trained, nothing saved
    with np.load(workdir / "samples.npz") as npz:
        assert npz["images"].shape == (6, 8, 8, 1)
        np.testing.assert_array_equal(npz["labels"], [7, 7, 3, 3, -1, -1])
        assert list(npz["prompts"][::2]) == ["a handwritten seven", "the digit 3", "a cat"]


@pytest.mark.parametrize("argv,match", [
    (["--image-size", "10", "--levels", "3"], "must be a multiple of 4"),
    (["--levels", "4"], "halves the image 3 times"),
    (["--image-size", "8", "--levels", "3", "--max-prompt-bytes", "20"], "raise --max-prompt-bytes"),
    (["--prompt", "|"], "empty prompt"),
    (["--prompt", " "], "empty prompt"),
    (["--guidance", "-1"], "--guidance must be >= 0"),
    (["--sample-steps", "51"], "--sample-steps must be in 1..50"),
    (["--schedule", "constant"], "unknown --schedule 'constant' (the noise schedule)"),
    (["--sampler", "euler"], "unknown --sampler"),
    (["--prompt", "x" * 60], "shorten it"),
    (["--channels", "16"], "--channels 8 -> 16"),
    (["--schedule", "linear"], "--schedule 'cosine' -> 'linear'"),
    (["--timesteps", "40"], "--timesteps 50 -> 40"),
    (["--sample-only", "--schedule", "linear"], "--schedule 'cosine' -> 'linear'"),
    (["--image-size", "10"], "judged by a MyNet"),
])
def test_bad_input_exits_2_and_leaves_a_finished_run_untouched(tmp_path, capsys, finished, argv, match):
    err = exits_2_untouched(diffusion.main, [*RUN, "--steps", "6", "--eval-every", "2", *argv], finished, tmp_path,
                            capsys)
    assert match in err, err


def test_sample_only_without_a_checkpoint_exits_2(tmp_path, capsys):
    err = exits_2(diffusion.main, [*RUN, "--sample-only", "--workdir", str(tmp_path / "none")], capsys)
    assert "train first" in err and not (tmp_path / "none").exists()
