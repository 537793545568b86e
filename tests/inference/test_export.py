"""jaxdl export: the forward pass as a jax.export artifact that a process with only jax can call."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxdl
from jaxdl.errors import UsageError
from jaxdl.inference.export import export

# runs in a process where jaxdl and flax cannot be imported
CALLER = """
import sys
sys.modules["jaxdl"] = sys.modules["flax"] = None
import numpy as np
from jax import export
with open(sys.argv[1], "rb") as f:
    exported = export.deserialize(bytearray(f.read()))
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(exported.call(x)))
for name in ("jaxdl", "flax"):
    try:
        __import__(name)
        raise SystemExit(name + " was importable")
    except ImportError:
        pass
"""


def _call_elsewhere(tmp_path, artifact, x):
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", CALLER, str(artifact), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, cwd=tmp_path)
    return np.load(tmp_path / "y.npy")


def test_classifier_export_runs_without_jaxdl_or_flax(cnn_run, tmp_path):
    model = jaxdl.load(cnn_run[0])
    meta = export(model, str(tmp_path / "cnn.jax"))
    assert json.loads((tmp_path / "cnn.jax.json").read_text()) == meta
    assert meta["platforms"] == ["cpu", "cuda", "tpu"] and meta["class_names"] == model.class_names
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1)).astype(np.uint8)
    x = np.asarray(model.preprocess.eval(model.to_training_images(images)))  # what the caller feeds it
    np.testing.assert_allclose(_call_elsewhere(tmp_path, tmp_path / "cnn.jax", x), model.logits(images), atol=1e-5)
    # the batch is symbolic: another batch size, same artifact
    assert _call_elsewhere(tmp_path, tmp_path / "cnn.jax", x[:2]).shape == (2, 10)


@pytest.mark.parametrize("run", ["rnn_run", "gpt_run"])
def test_language_model_export_gives_the_same_logits(run, request, tmp_path):
    model = jaxdl.load(request.getfixturevalue(run)[0])
    meta = export(model, str(tmp_path / "lm.jax"), ("cpu",))
    assert meta["tokenizer"] == model.info["tokenizer"]
    tokens = model.encode("ROMEO:\nI will")[None].repeat(2, 0)
    np.testing.assert_allclose(_call_elsewhere(tmp_path, tmp_path / "lm.jax", tokens), model.logits(tokens),
                               atol=1e-5)


def test_export_refuses_what_it_cannot_write(cnn_run, diffusion_run, tmp_path):
    model = jaxdl.load(cnn_run[0])
    with pytest.raises(UsageError, match="cannot write"):
        export(model, str(tmp_path / "missing" / "f.jax"))
    with pytest.raises(UsageError, match="cannot write"):
        export(model, str(tmp_path))
    with pytest.raises(UsageError, match="platform"):
        export(model, str(tmp_path / "f.jax"), ("abacus",))
    with pytest.raises(UsageError, match="diffusion"):
        export(jaxdl.load(diffusion_run[0]), str(tmp_path / "f.jax"))
    assert not os.path.exists(tmp_path / "f.jax")
