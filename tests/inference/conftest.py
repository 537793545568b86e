"""Tiny trained runs of every family, made once per session, shared by the inference tests."""

import pytest

from tests import run_store

CNN = ["--image-size", "8", "--batch-size", "32", "--epochs", "2", "--log-every", "5"]
RNN = ["--hidden", "16", "--embed", "8", "--layers", "1", "--seq-len", "16", "--batch-size", "8", "--steps", "6",
       "--eval-every", "3", "--sample-length", "12", "--log-every", "2"]
GPT = ["--arch", "lm", "--layers", "1", "--d-model", "16", "--heads", "2", "--seq-len", "16", "--batch-size", "4",
       "--steps", "4", "--eval-every", "2", "--sample-length", "24", "--warmup-steps", "0", "--log-every", "2"]
SEQ2SEQ = ["--arch", "seq2seq", "--task", "reverse", "--layers", "1", "--d-model", "16", "--heads", "2",
           "--min-len", "1", "--max-len", "8", "--longer-by", "1", "--test-examples", "40", "--batch-size", "16",
           "--steps", "30", "--eval-every", "15", "--warmup-steps", "0", "--log-every", "5"]
DIFFUSION = ["--channels", "8", "--levels", "1", "--blocks", "1", "--heads", "2", "--text-layers", "1",
             "--text-width", "16", "--batch-size", "16", "--timesteps", "50", "--sample-steps", "3",
             "--num-samples", "2", "--judge-epochs", "1", "--steps", "4", "--eval-every", "2", "--log-every", "2",
             "--lr-schedule", "constant", "--warmup-steps", "0"]


RUNS = {"cnn": ("cnn", CNN), "rnn": ("rnn", RNN), "gpt": ("transformer", GPT), "seq2seq": ("transformer", SEQ2SEQ),
        "diffusion": ("diffusion", DIFFUSION), "xor": ("mlp", ["--task", "xor", "--epochs", "3"]),
        "digits_mlp": ("mlp", ["--task", "digits", "--epochs", "2", "--ensemble", "2"])}


def _run_fixture(name):
    """A session fixture: (workdir, summary) of the `name` run, trained on first use (or copied from
    the same run another process of the session made: tests/run_store.py)."""

    @pytest.fixture(scope="session", name=f"{name}_run")
    def trained(tmp_path_factory):
        script, argv = RUNS[name]
        workdir = tmp_path_factory.mktemp(name)
        return workdir, run_store.run(script, [*argv, "--workdir", str(workdir)])

    return trained


cnn_run, rnn_run, gpt_run, seq2seq_run, diffusion_run, xor_run, digits_mlp_run = map(_run_fixture, RUNS)
