"""experiments/long_range.py end to end at tiny sizes: the summary's keys, both pictures, one model per
(lag, seed) in the vmapped step, and a rerun that resumes instead of training again."""

import json

import pytest

from experiments import long_range
from jaxdl import cli
from jaxdl.errors import UsageError

TINY = ["--lags", "2,5", "--cells", "rnn,gru", "--seeds", "2", "--steps", "4", "--eval-every", "2", "--hidden", "4",
        "--embed", "4", "--batch-size", "4", "--test-examples", "6", "--probe-examples", "2"]


def test_end_to_end_then_a_rerun_resumes(tmp_path):
    summary = long_range.main([*TINY, "--workdir", str(tmp_path)])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("longest_lag_solved", "solved_accuracy", "accuracy", "num_params", "dataset", "device", "steps",
                "wall_seconds", "gradient_norm_by_distance", "gradient_ratio_at_longest_lag"):
        assert key in on_disk, key
    assert set(on_disk["longest_lag_solved"]) == {"rnn", "gru"} and on_disk["solved_accuracy"] == 0.9
    assert set(on_disk["accuracy"]["gru"]) == {"2", "5"} and on_disk["steps"] == 4
    assert all(len(a) == 2 for a in on_disk["per_seed_accuracy"]["rnn"].values())  # two seeds per lag
    for when in ("init", "trained"):  # one norm per distance 0 .. length - 1 (the longest lag + 1 steps)
        assert len(on_disk["gradient_norm_by_distance"]["gru"][when]) == 6
    for picture in ("accuracy_vs_lag.png", "gradient_vs_distance.png"):
        assert (tmp_path / picture).stat().st_size > 5_000
    for cell in ("rnn", "gru"):
        assert (tmp_path / cell / "metrics.jsonl").exists() and (tmp_path / cell / "checkpoints").is_dir()
        events = [json.loads(line) for line in (tmp_path / cell / "metrics.jsonl").read_text().splitlines()]
        assert len([e for e in events if e["split"] == "test"][-1]["accuracy"]) == 4  # 2 lags x 2 seeds

    lines_before = (tmp_path / "gru" / "metrics.jsonl").read_text()
    again = long_range.main([*TINY, "--workdir", str(tmp_path)])  # finished: restored and evaluated, not trained
    assert (tmp_path / "gru" / "metrics.jsonl").read_text() == lines_before
    assert again["accuracy"] == summary["accuracy"] and again["steps"] == 4

    longer = long_range.main([*TINY, "--steps", "6", "--workdir", str(tmp_path)])  # a larger --steps continues
    assert longer["steps"] == 6


@pytest.mark.parametrize("argv,flag", [(["--lags", "3,3"], "--lags"), (["--lags", "0"], "--lags"),
                                       (["--cells", "rnn,tcn"], "--cells"), (["--symbols", "1"], "--symbols"),
                                       (["--lags", "1,2", "--seeds", "1000"], "--seeds"),
                                       (["--solved-accuracy", "1.5"], "--solved-accuracy")])
def test_bad_flags_stop_with_one_line(argv, flag, tmp_path):
    with pytest.raises(UsageError, match=flag):
        cli.parse(long_range.Config, [*argv, "--workdir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()
