"""benchmarks/inference_speed.py --quick run as a user runs it (a subprocess): the command Using
trained models shows (PAGE_COMMAND, which the page's own test leaves to this one), on the tiny runs
these tests share, the GPT's made by the benchmark itself: its tables are printed, its figures are
there, positive and the ones printed; a missing run or one of another family is refused in one line;
the runs it makes itself use flags its experiments take."""

import json
import math
import re
import shlex

import pytest

from benchmarks import inference_speed
from experiments import cnn, rnn, transformer
from jaxdl import cli
from tests.benchmarks.quick import run_ok
from tests.experiments.workdir import exits_2


PAGE_COMMAND = "python benchmarks/inference_speed.py --cnn runs/cnn --lstm runs/rnn-lstm"


def test_inference_benchmark_quick(cnn_run, rnn_run, tmp_path):
    ours = {"runs/cnn": str(cnn_run[0]), "runs/rnn-lstm": str(rnn_run[0])}
    argv = [ours.get(word, word) for word in shlex.split(PAGE_COMMAND)[2:]]
    assert set(ours.values()) <= set(argv)
    out = run_ok("inference_speed.py", [*argv, "--quick", "--json", str(tmp_path / "f.json")])
    assert "making a gpt run: experiments/transformer.py" in out
    figures = json.loads((tmp_path / "f.json").read_text())
    predict = figures["predict"]
    assert predict["images"] == inference_speed.QUICK["images"] and predict["steady_predict_s"] > 0
    steady = re.search(r"\| steady predict \| ([\d.]+) \(([\d,]+) images/s\) \|", out)
    assert float(steady[1]) == pytest.approx(predict["steady_predict_s"], abs=5e-4)
    assert float(steady[2].replace(",", "")) == pytest.approx(predict["images"] / predict["steady_predict_s"], abs=0.5)
    assert set(figures["generate"]) == {"lstm", "gpt"}
    for name, g in figures["generate"].items():
        assert g["tokens_per_s"] > 0 and g["command_s"] > 0 and g["first_call_s"] > 0
        row = re.search(rf"^\| {name}: .* \| ([\d.]+) \| ([\d,]+) \| ([\d.]+) \|$", out, re.M)
        assert float(row[2].replace(",", "")) == pytest.approx(g["tokens_per_s"], abs=0.5)
    assert f"| generate {inference_speed.QUICK['new_tokens']} tokens |" in out and "`jaxdl generate` wall s" in out
    startup = figures["startup"]
    assert all(math.isfinite(startup[k]) and startup[k] > 0 for k in ("predict_s", "info_s")), startup


def test_missing_or_wrong_run_is_refused(rnn_run, tmp_path, capsys):
    assert "--cnn" in exits_2(inference_speed.main, ["--cnn", str(tmp_path / "none")], capsys)
    err = exits_2(inference_speed.main, ["--cnn", str(rnn_run[0])], capsys)
    assert "language_model run" in err and "classifier" in err


@pytest.mark.parametrize("name", inference_speed.MAKE)
def test_runs_it_makes_take_these_flags(name, tmp_path):
    """The runs made when none is given: both flag sets are ones the experiment accepts."""
    script, flags, tiny = inference_speed.MAKE[name]
    config = {"cnn.py": cnn.Config, "rnn.py": rnn.Config, "transformer.py": transformer.Config}[script]
    for argv in (flags, tiny):
        cli.parse(config, [*argv, "--workdir", str(tmp_path / name)])
