"""The one rule for resuming: config.json records every field; a resume may change only the fields
that cannot change the result so far, and a refusal names the flags."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.cli import field
from jaxdl.data.batches import cycled_batches
from jaxdl.errors import UsageError
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step, run_config

N, D = 64, 3


@dataclasses.dataclass
class Config(TrainConfig):
    width: int = field(D, "a field that shapes the result")
    label_noise: float = field(0.0, "another one, of the same shapes")
    note: str = field("", "printed only", resume="free")
    steps: int = field(8, "training steps in all", resume="length")
    epochs: int = 1


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    return {"x": x, "y": (x.sum(-1) > 0).astype(np.float32)}


def _loss(params, batch, rng):
    logits = batch["x"] @ params["w"] + params["b"]
    loss = jnp.mean(jnp.logaddexp(0.0, logits) - batch["y"] * logits)
    return loss, {"loss": loss}


def _run(workdir, resolved=None, **overrides):
    cfg = Config(workdir=str(workdir), batch_size=16, lr=0.1, **overrides)
    opt = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay, schedule=cfg.schedule, total_steps=cfg.steps)
    state = TrainState.create({"w": jnp.zeros((D,)), "b": jnp.zeros(())}, opt, cfg.seed)
    data = _data()
    return fit(state, make_train_step(_loss, opt), cycled_batches(data, 16, cfg.seed), 4, lambda p: {"loss": float(_loss(p, data, None)[0])}, cfg, total_steps=cfg.steps,
               resolved=resolved or {"dataset": "made here"})


def _files(workdir):
    return {p.relative_to(workdir): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


def test_config_json_records_every_field_and_what_it_resolved_to(tmp_path):
    _run(tmp_path, note="hello")
    saved = json.loads((tmp_path / run_config.FILE).read_text())
    assert saved["format"] == run_config.FORMAT
    assert set(saved["config"]) == {f.name for f in dataclasses.fields(Config)}
    assert saved["config"]["note"] == "hello" and saved["config"]["width"] == D
    assert saved["resolved"] == {"dataset": "made here"}


@pytest.mark.parametrize("overrides, named", [
    ({"label_noise": 0.5}, "--label-noise 0.0 -> 0.5"),
    ({"seed": 3}, "--seed 0 -> 3"),
    ({"optimizer": "sgd"}, "--optimizer 'adam' -> 'sgd'"),
    ({"weight_decay": 0.0}, "--weight-decay 0.0001 -> 0.0"),
    ({"schedule": "cosine"}, "--schedule 'constant' -> 'cosine'"),
])
def test_a_resume_that_changes_a_same_field_is_refused_naming_it_and_writes_nothing(tmp_path, overrides, named):
    _run(tmp_path, steps=4)
    before = _files(tmp_path)
    with pytest.raises(UsageError, match="was trained with other settings") as e:
        _run(tmp_path, steps=8, **overrides)
    assert named in str(e.value) and "\n" not in str(e.value)
    assert _files(tmp_path) == before


def test_a_resolved_value_that_changed_is_refused(tmp_path):
    _run(tmp_path, steps=4)
    with pytest.raises(UsageError, match="dataset 'made here' -> 'elsewhere'"):
        _run(tmp_path, steps=8, resolved={"dataset": "elsewhere"})


def test_free_and_length_fields_may_change_and_the_record_follows(tmp_path):
    _run(tmp_path, steps=4, note="a")
    result = _run(tmp_path, steps=8, note="b", log_every=1, checkpoint_every=2, keep_checkpoints=5)
    assert result.steps == 8
    saved = json.loads((tmp_path / run_config.FILE).read_text())["config"]
    assert saved["note"] == "b" and saved["steps"] == 8 and saved["log_every"] == 1


def test_a_resumed_run_is_the_uninterrupted_run_when_only_free_fields_change(tmp_path):
    straight = _run(tmp_path / "a", steps=8)
    _run(tmp_path / "b", steps=4, note="first")
    resumed = _run(tmp_path / "b", steps=8, note="second", log_every=3)
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stretching_a_cosine_schedule_is_allowed_and_said(tmp_path, capsys):
    _run(tmp_path, steps=4, schedule="cosine")
    capsys.readouterr()
    _run(tmp_path, steps=8, schedule="cosine")
    out = capsys.readouterr().out
    assert "note: --steps 4 -> 8: the cosine learning-rate schedule (--schedule) now spans the new length" in out


def test_without_a_checkpoint_a_changed_config_is_a_new_start(tmp_path):
    _run(tmp_path, steps=4)
    for p in (tmp_path / "checkpoints").iterdir():  # as if killed before its first checkpoint
        shutil.rmtree(p)
    _run(tmp_path, steps=4, label_noise=0.5)
    assert json.loads((tmp_path / run_config.FILE).read_text())["config"]["label_noise"] == 0.5


def test_a_field_newer_than_the_run_passes_at_its_default_only(tmp_path):
    _run(tmp_path, steps=4)
    path = tmp_path / run_config.FILE
    saved = json.loads(path.read_text())
    del saved["config"]["label_noise"]  # as written by a jaxdl that had no such flag
    path.write_text(json.dumps(saved))
    _run(tmp_path, steps=8)
    saved = json.loads(path.read_text())
    del saved["config"]["label_noise"]
    path.write_text(json.dumps(saved))
    with pytest.raises(UsageError, match="--label-noise 0.5 \\(the run predates this flag, which means 0.0\\)"):
        _run(tmp_path, steps=12, label_noise=0.5)


def test_a_run_of_another_script_is_refused(tmp_path):
    _run(tmp_path, steps=4)
    path = tmp_path / run_config.FILE
    saved = json.loads(path.read_text())
    saved["config"]["cell"] = "lstm"
    path.write_text(json.dumps(saved))
    with pytest.raises(UsageError, match="--cell 'lstm' -> not a flag of this script"):
        _run(tmp_path, steps=8)


@pytest.mark.parametrize("content, match", [
    ("{not json", "cannot be read"), ('{"format": 99, "config": {}}', "format 99, newer than this jaxdl reads"),
    ('{"format": 1}', "not a jaxdl run config"), ("[]", "not a jaxdl run config"),
])
def test_a_damaged_or_newer_config_json_is_refused(tmp_path, content, match):
    _run(tmp_path, steps=4)
    (tmp_path / run_config.FILE).write_text(content)
    with pytest.raises(UsageError, match=match):
        _run(tmp_path, steps=8)


def test_steps_lowered_below_a_mid_round_checkpoint_evaluates_what_is_there(tmp_path, capsys):
    _run(tmp_path, steps=8, checkpoint_every=3)  # checkpoints at 3, 4 (round end), 6, 8
    result = _run(tmp_path, steps=5)  # resumes from 8, beyond the 5 asked for
    assert result.steps == 8
    assert "Already trained 8 steps, more than the 5 that --steps asks for" in capsys.readouterr().out
