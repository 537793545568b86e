"""benchmarks/diffusion_sampling.py on a tiny trained run: both rows drawn, bad input refused."""

from benchmarks import diffusion_sampling
from tests.experiments.workdir import exits_2


def test_diffusion_sampling_benchmark_runs(diffusion_run, rnn_run, capsys):
    rows = diffusion_sampling.main(["--workdir", str(diffusion_run[0]), "--ddim-samples", "2", "--ddpm-samples", "1",
                                    "--sample-steps", "3"])
    assert [(r[0], r[1], r[2]) for r in rows] == [("ddim", 3, 20), ("ddpm", 50, 10)] and all(r[-1] > 0 for r in rows)
    assert "DDIM 3 steps draws" in capsys.readouterr().out
    assert "exceeds the run's 50" in exits_2(diffusion_sampling.main, ["--workdir", str(diffusion_run[0]),
                                                                       "--sample-steps", "51"], capsys)
    assert "language_model run" in exits_2(diffusion_sampling.main, ["--workdir", str(rnn_run[0])], capsys)
