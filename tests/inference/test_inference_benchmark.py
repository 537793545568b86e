"""benchmarks/inference_speed.py runs (tiny runs, one repeat): its figures are there and positive."""

from benchmarks import inference_speed


def test_inference_benchmark_runs(cnn_run, rnn_run, gpt_run, tmp_path, capsys):
    figures = inference_speed.main(["--cnn", str(cnn_run[0]), "--lstm", str(rnn_run[0]), "--gpt", str(gpt_run[0]),
                                    "--images", "16", "--new-tokens", "6", "--repeats", "1",
                                    "--json", str(tmp_path / "f.json")])
    out = capsys.readouterr().out
    assert "steady predict" in out and "`jaxdl generate` wall s" in out and (tmp_path / "f.json").exists()
    assert figures["predict"]["images"] == 16 and figures["predict"]["steady_predict_s"] > 0
    assert all(g["tokens_per_s"] > 0 and g["command_s"] > 0 for g in figures["generate"].values())
    assert figures["startup"]["predict_s"] > figures["startup"]["info_s"] > 0
