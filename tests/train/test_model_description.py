"""model.json across jaxdl versions: a resume whose saved model.json predates a model field (written
before the field existed) reads it as its default and goes on; a real change is still refused by name."""

import json

import pytest

from jaxdl.errors import UsageError
from jaxdl.models.registry import describe
from jaxdl.models.transformer import DecoderLM
from jaxdl.tasks import run_info  # noqa: F401 (sets how saved model entries are read)
from jaxdl.train import description


def model_json(model, **drop_fields):
    d = {"format": description.FORMAT, "family": "language_model", "model": describe(model)}
    for name in drop_fields:
        d["model"]["fields"].pop(name)
    return d


def test_a_field_added_since_the_run_started_reads_as_its_default(tmp_path):
    model = DecoderLM(vocab_size=65, d_model=32, num_layers=2, num_heads=2)
    (tmp_path / "model.json").write_text(json.dumps(model_json(model, gelu=None, fast_variance=None)))
    description.check(str(tmp_path), model_json(model))  # no error: the old run computed the defaults


def test_a_real_change_is_still_named(tmp_path):
    old = DecoderLM(vocab_size=65, d_model=32, num_layers=2, num_heads=2)
    (tmp_path / "model.json").write_text(json.dumps(model_json(old, gelu=None)))
    with pytest.raises(UsageError, match=r"model\.fields\.gelu: 'exact' -> 'tanh'"):
        description.check(str(tmp_path), model_json(old.clone(gelu="tanh")))
    with pytest.raises(UsageError, match=r"model\.fields\.d_model: 32 -> 64"):
        description.check(str(tmp_path), model_json(old.clone(d_model=64)))


def test_how_it_computes_may_change_on_resume(tmp_path):
    """remat, layers per scan iteration and the attention kernel change how the model computes, not what
    (the flags are resume="free"): a resume that changes them is accepted."""
    old = DecoderLM(vocab_size=65, d_model=32, num_layers=2, num_heads=2)
    (tmp_path / "model.json").write_text(json.dumps(model_json(old)))
    description.check(str(tmp_path), model_json(old.clone(remat=True, unroll=2, implementation="cudnn")))
    with pytest.raises(UsageError, match=r"model\.fields\.scan: True -> False"):  # another param tree
        description.check(str(tmp_path), model_json(old.clone(scan=False, remat=True)))
