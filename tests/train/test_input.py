"""The data iterator's place in the checkpoints: every checkpoint keeps the Grain iterator's state,
a resume reads the batches from there, and a state that disagrees with its checkpoint's step is
refused; a checkpoint from before iterator states were kept resumes from its step."""

import json
import shutil

import jax
import numpy as np
import pytest

from jaxdl.errors import UsageError
from tests.train.test_loop import _run

STEPS_PER_EPOCH = 6  # N // 16 in test_loop


def _loop_item(workdir, step):
    return workdir / "checkpoints" / str(step) / "loop" / "metadata"


def test_every_checkpoint_keeps_the_iterator_at_its_step(tmp_path):
    _run(tmp_path, epochs=2, checkpoint_every=4, keep_checkpoints=10)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 6, 8, 12]  # every 4 steps, and each epoch's end
    for step in steps:
        assert json.loads(_loop_item(tmp_path, step).read_text())["data"] == {"next_index": step}


def _without_later_checkpoints(workdir, keep):
    for p in (workdir / "checkpoints").iterdir():
        if p.name.isdigit() and int(p.name) > keep:
            shutil.rmtree(p)


@pytest.mark.parametrize("saved", ["kept", "predates iterator states"])
def test_a_resume_mid_epoch_reads_on_from_the_saved_iterator(tmp_path, saved):
    straight = _run(tmp_path / "a", epochs=2, checkpoint_every=4, keep_checkpoints=10)
    _run(tmp_path / "b", epochs=2, checkpoint_every=4, keep_checkpoints=10)
    _without_later_checkpoints(tmp_path / "b", 4)  # as if killed after step 4, two steps into an epoch
    if saved != "kept":
        item = _loop_item(tmp_path / "b", 4)
        loop = json.loads(item.read_text())
        del loop["data"]
        item.write_text(json.dumps(loop))
    resumed = _run(tmp_path / "b", epochs=2, checkpoint_every=4, keep_checkpoints=10)
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_iterator_state_at_another_step_is_refused(tmp_path):
    _run(tmp_path, epochs=1, checkpoint_every=4, keep_checkpoints=10)
    item = _loop_item(tmp_path, STEPS_PER_EPOCH)
    item.write_text(json.dumps({**json.loads(item.read_text()), "data": {"next_index": 3}}))
    with pytest.raises(UsageError, match="the checkpoint of step 6 holds a data iterator at .*next_index.*: 3"):
        _run(tmp_path, epochs=2, checkpoint_every=4, keep_checkpoints=10)
