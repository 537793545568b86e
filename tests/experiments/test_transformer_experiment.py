"""experiments/transformer.py end to end at small sizes: both architectures' workdir contract, bad input.

(Resuming is the engine's and the data streams' to get right: tests/experiments/test_rnn_experiment.py
and tests/data/test_sequence_tasks.py.)"""

import json

import pytest

from experiments import transformer
from tests.experiments.workdir import exits_2_untouched

TINY = ["--layers", "1", "--heads", "2", "--d-model", "16", "--batch-size", "4", "--log-every", "2", "--dropout", "0"]
LM = [*TINY, "--seq-len", "16", "--sample-length", "40", "--prompt", "It is", "--warmup-steps", "0"]
SEQ2SEQ = [*TINY, "--arch", "seq2seq", "--max-len", "5", "--longer-by", "2", "--test-examples", "20",
           "--schedule", "constant", "--warmup-steps", "0"]  # a cosine schedule depends on --steps


LM_RUN = ["--steps", "4", "--eval-every", "2", "--pos", "rope", "--norm", "rms", "--kv-heads", "1"]


@pytest.fixture(scope="module")
def finished_lm(tmp_path_factory, corpus):
    workdir = tmp_path_factory.mktemp("finished")
    transformer.main([*LM, *LM_RUN, "--dataset", f"text:{corpus}", "--workdir", str(workdir)])
    return workdir


def test_lm_writes_the_contract(finished_lm):
    on_disk = json.loads((finished_lm / "summary.json").read_text())
    for key in ("val_loss", "val_bpc", "tokens_per_sec", "mfu", "compile_seconds", "num_params", "sample", "steps",
                "dataset", "device", "wall_seconds"):
        assert key in on_disk, key
    # mfu is a ratio of two speeds measured at different moments, so no bound on it holds on a busy machine;
    # it must be finite, positive, and tokens/s times a FLOPs-per-token between 12 L T D and 6 N + 12 L T D
    # over the recorded matmul peak (--layers 1, --seq-len 16, --d-model 16; N <= num_params).
    assert all(0 < on_disk[k] < float("inf") for k in ("mfu", "matmul_peak_gflops", "tokens_per_sec"))
    flops_per_token = on_disk["mfu"] * on_disk["matmul_peak_gflops"] * 1e9 / on_disk["tokens_per_sec"]
    attention = 12 * 1 * 16 * 16
    assert attention < flops_per_token <= (6 * on_disk["num_params"] + attention) * (1 + 1e-9)
    assert on_disk["steps"] == 4
    assert on_disk["sample"].startswith("It is") and len(on_disk["sample"]) == 5 + 40  # 40 > the context of 16
    events = [json.loads(line) for line in (finished_lm / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["split"] == "test"] == [2, 4]


def test_seq2seq_writes_the_contract(tmp_path):
    summary = transformer.main([*SEQ2SEQ, "--steps", "4", "--eval-every", "2", "--workdir", str(tmp_path)])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("exact_match", "longer_exact_match", "longer_exact_match_by_length", "token_accuracy", "val_loss",
                "num_params", "steps", "wall_seconds"):
        assert key in on_disk, key
    assert sorted(summary["longer_exact_match_by_length"]) == [6, 7]
    assert 0 <= summary["exact_match"] <= 1 and on_disk["steps"] == 4
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["split"] == "test"] == [2, 4]


@pytest.mark.parametrize("argv,match", [
    (["--heads", "3"], "--heads 3 does not divide --d-model 16"),
    (["--kv-heads", "3"], "--kv-heads 3 must divide --heads 2"),
    (["--pos", "relative"], "unknown --pos 'relative'"),
    (["--arch", "bert"], "unknown --arch"),
    (["--norm", "batch"], "unknown --norm"),
    (["--prompt", "It is a truth universally"], "longer than the context of 16"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--d-model", "32"], "--d-model 16 -> 32"),
    (["--pos", "sinusoidal"], "--pos 'rope' -> 'sinusoidal'"),
])
def test_bad_input_exits_2_and_leaves_a_finished_run_untouched(tmp_path, capsys, corpus, finished_lm, argv, match):
    err = exits_2_untouched(transformer.main, [*LM, *LM_RUN, "--steps", "6", "--dataset", f"text:{corpus}", *argv],
                            finished_lm, tmp_path, capsys)
    assert match in err, err
