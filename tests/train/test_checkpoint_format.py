"""Checkpoint formats: a stored format-1 run (tests/data/checkpoint_format_1) still loads with the outputs
recorded when it was made and still resumes; a checkpoint of a format this jaxdl does not read is refused
with one line naming the format (exit 2), and left where it is, byte for byte."""

import json
import os
import re
import shutil

import numpy as np
import pytest

import jaxdl
from experiments import mlp
from jaxdl import commands
from jaxdl.errors import UsageError
from jaxdl.train.checkpoint import CHECKPOINT_FORMAT
from tests.experiments.workdir import exits_2, exits_2_untouched, snapshot

STORED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "checkpoint_format_1")
REFERENCE = json.load(open(os.path.join(STORED, "reference.json")))
# the command that made the stored run (reference.json), less its --workdir
COMMAND = REFERENCE["command"].split()[1:-2]


@pytest.fixture
def stored(tmp_path):
    """A copy of the stored run: tests never touch the original."""
    return shutil.copytree(os.path.join(STORED, "workdir"), tmp_path / "stored")


def _steps(workdir):
    return sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())


def _set_format(workdir, step, value):
    """Rewrite the format a checkpoint records (None: remove it, as checkpoints from before the number)."""
    path = workdir / "checkpoints" / str(step) / "loop" / "metadata"
    loop = json.loads(path.read_text())
    assert loop.get("format") == 1, loop  # what the stored run recorded
    loop.pop("format")
    path.write_text(json.dumps(loop if value is None else {**loop, "format": value}))


def test_the_stored_run_is_of_todays_format():
    assert REFERENCE["format"] == CHECKPOINT_FORMAT == 1, "a new format needs its own stored run: see README.md there"
    assert COMMAND[0] == "experiments/mlp.py" and "--workdir" not in COMMAND


@pytest.mark.parametrize("recorded", ["as stored", "no number"])
def test_load_gives_the_outputs_recorded_when_the_run_was_made(stored, recorded):
    if recorded == "no number":  # written before checkpoints carried a format: read as format 1
        for step in _steps(stored):
            _set_format(stored, step, None)
    inputs = np.asarray(REFERENCE["inputs"], np.float32)
    assert sorted(map(int, REFERENCE["predictions"])) == _steps(stored) == [5, 10]
    for step, want in REFERENCE["predictions"].items():
        model = jaxdl.load(stored, int(step))
        assert model.step == int(step)
        np.testing.assert_allclose(model.predict(inputs)[:, 0], want, rtol=0, atol=1e-6, err_msg=f"step {step}")
    # and the run's own last evaluation: binary cross-entropy and accuracy against x1 XOR x2
    p = jaxdl.load(stored, "latest").predict(inputs)[:, 0].astype(np.float64)
    labels = np.logical_xor(inputs[:, 0], inputs[:, 1]).astype(np.float64)
    loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert loss == pytest.approx(REFERENCE["summary"]["test_loss"], rel=1e-5)
    assert np.mean((p > 0.5) == labels) == REFERENCE["summary"]["test_accuracy"]


def test_resuming_the_stored_run_trains_one_more_epoch(stored, capsys):
    epochs = int(COMMAND[COMMAND.index("--epochs") + 1])
    argv = [*COMMAND[1:], "--workdir", str(stored)]
    argv[argv.index("--epochs") + 1] = str(epochs + 1)
    summary = mlp.main(argv)
    assert "Resuming from step 10 " in capsys.readouterr().out
    assert summary["steps"] == 15 and np.isfinite(summary["test_loss"]) and _steps(stored)[-1] == 15
    saved = json.loads((stored / "checkpoints" / "15" / "loop" / "metadata").read_text())
    assert saved.get("format") == CHECKPOINT_FORMAT  # every checkpoint written records its format
    np.testing.assert_allclose(jaxdl.load(stored, 10).predict(np.asarray(REFERENCE["inputs"]))[:, 0],
                               REFERENCE["predictions"]["10"], atol=1e-6)  # the resumed-from one unchanged


@pytest.mark.parametrize("found, says", [(99, "has format 99, newer than this jaxdl reads (1): upgrade jaxdl"),
                                         (0, "has format 0, older than this jaxdl reads (1): ")])
def test_another_format_is_refused_not_set_aside(stored, tmp_path, capsys, found, says):
    """Only the newest checkpoint is of the other format: a refusal treated as damage would move it to
    checkpoints.damaged/ and resume from step 5."""
    _set_format(stored, 10, found)
    before = snapshot(stored)
    with pytest.raises(UsageError, match=re.escape(f"checkpoint {stored}/checkpoints/10 {says}")):
        jaxdl.load(stored, "latest")
    err = exits_2(commands.main, ["export", str(stored), "--checkpoint", "latest", "--out", str(tmp_path / "f.jax")],
                  capsys)
    assert says in err and not (tmp_path / "f.jax").exists()
    assert snapshot(stored) == before
    err = exits_2_untouched(mlp.main, [*COMMAND[1:]], stored, tmp_path, capsys)  # resume: same command
    assert f"checkpoint {tmp_path / 'run'}/checkpoints/10 {says}" in err
    assert not any(p.endswith(".damaged") for p in os.listdir(tmp_path / "run"))
