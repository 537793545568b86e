"""TensorBoard, Tests, Scale and resilience, Speed and Architecture, run as written (see
docs_harness.py: experiments at tiny sizes, benchmarks with --quick, pytest commands collected)."""

import glob

import pytest

from tests.docs import docs_harness as h

PAGES = ["docs/tensorboard.md", "docs/tests.md", "docs/scale-and-resilience.md", "docs/speed.md",
         "docs/architecture.md"]


def test_tensorboard(tmp_path):
    h.run_page_process("docs/tensorboard.md", str(tmp_path))
    assert glob.glob(str(tmp_path / "runs/rnn-gru/tensorboard/plugins/profile/*/*.trace.json.gz"))
    assert (tmp_path / "runs/cnn/tensorboard").is_dir() and not (tmp_path / "runs/mlp-xor/tensorboard").exists()


@pytest.mark.parametrize("page", ["docs/tests.md", "docs/scale-and-resilience.md", "docs/speed.md"])
def test_page(page, tmp_path):
    h.run_page_process(page, str(tmp_path))


def test_architecture_has_nothing_to_run():
    """Its blocks are a tree and a sketch of the seam (the runnable example is on Using trained models)."""
    assert all(b.lang == "" for b in h.blocks("docs/architecture.md"))
