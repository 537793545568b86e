"""The front page, Install, Using trained models and Weights from and to PyTorch, run as written (see
docs_harness.py: experiments at tiny sizes, in a fresh folder and process per page), and what their
commands print checked where the page shows it."""

import os
import re

import pytest

from tests.docs import docs_harness as h

PAGES = ["README.md", "docs/install.md", "docs/using-trained-models.md", "docs/pytorch.md"]


def test_front_page(tmp_path):
    out = h.run_page_process("README.md", str(tmp_path))
    assert (tmp_path / "runs" / "cnn" / "model.json").exists()
    assert re.search(r"^my_digit\.png: \d \(", out, re.M)  # jaxdl predict's answer


def test_install(tmp_path):
    out = h.run_page_process("docs/install.md", str(tmp_path))
    assert "CpuDevice" in out  # python -c 'import jax; print(jax.devices())'


def test_using_trained_models(tmp_path):
    out = h.run_page_process("docs/using-trained-models.md", str(tmp_path))
    for made in ("mynet.jax", "mynet.jax.json", "sevens.png", "runs/mlp-xor/model.json",
                 "runs/cnn-typed_digits-tuned/model.json", "runs/rnn-lstm-LICENSE-tuned/model.json"):
        assert (tmp_path / made).exists(), made
    assert re.search(r"^seven\.png: \d \(", out, re.M)  # the transcript's first command
    assert re.search(r"^0123456 -> ", out, re.M) and re.search(r"^31415926 -> ", out, re.M)
    assert re.search(r"^[\d.]+% of \d+ typed digits$", out, re.M)


def test_pytorch(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = h.run_page_process("docs/pytorch.md", str(tmp_path))
    # both sides give the same answers, in the run and in the transcript the page shows
    pytorch = dict(re.findall(r"^(digit_\d+\.png): PyTorch says (\d)$", out, re.M))
    jax = dict(re.findall(r"^(digit_\d+\.png): (\d) \(", out, re.M))
    assert len(pytorch) == 4 and jax == pytorch
    shown = [b for b in h.blocks("docs/pytorch.md") if b.lang == "console"][0].text
    assert dict(re.findall(r"^(digit_\d+\.png): PyTorch says (\d)$", shown, re.M)) == dict(
        re.findall(r"^(digit_\d+\.png): (\d) \(", shown, re.M))
    # GPT-2 (a random one in place of the download)
    assert "The meaning of life is" in out
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2-again")
    assert model.config.n_layer == 2 and (tmp_path / "gpt2-again" / "tokenizer.json").exists()
    assert os.path.getsize(tmp_path / "mynet.safetensors") > 30e6  # MyNet at 48x48: 9.5M float32 weights
