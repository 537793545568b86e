"""The family pages (MyNet, MLPs, recurrent nets, transformers, diffusion), run as written (see
docs_harness.py: experiments at tiny sizes, in a fresh folder per page)."""

import pytest

from tests.docs import docs_harness as h

PAGES = ["docs/mynet.md", "docs/mlp.md", "docs/recurrent.md", "docs/transformers.md", "docs/diffusion.md",
         "docs/long-range.md"]
MADE = {  # a few of what each page's commands make, beyond the workdirs every run is checked for
    "docs/mynet.md": ["data/digits_png/test/7", "runs/cnn/confusion_matrix.png"],
    "docs/mlp.md": ["runs/mlp-xor/decision_boundary.png", "runs/mlp-sine/fit.png",
                    "runs/mlp-sine-activations/activations.png"],
    "docs/recurrent.md": ["runs/rnn-gru-LICENSE/tokenizer.json"],
    "docs/transformers.md": ["runs/transformer-seq2seq-add/model.json", "runs/transformer-seq2seq-500/curves.png"],
    "docs/diffusion.md": ["runs/diffusion/samples.png", "runs/diffusion/judge"],
    "docs/long-range.md": ["runs/long_range/accuracy_vs_lag.png", "runs/long_range/gradient_vs_distance.png",
                           "runs/long_range/lstm/checkpoints"],
}


@pytest.mark.parametrize("page", PAGES)
def test_page(page, tmp_path):
    h.run_page_process(page, str(tmp_path))
    for made in MADE[page]:
        assert (tmp_path / made).exists(), made
