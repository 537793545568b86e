"""benchmarks/diffusion_sampling.py --quick run as a user runs it (a subprocess) on the tiny diffusion
run these tests share: both rows drawn and printed; bad input refused in one line; the tiny run
--quick trains without --workdir uses flags experiments/diffusion.py takes."""

import re

from benchmarks import diffusion_sampling
from experiments import diffusion
from jaxdl import cli
from tests.benchmarks.quick import run_ok
from tests.experiments.workdir import exits_2


def test_diffusion_sampling_benchmark_quick(diffusion_run):
    out = run_ok("diffusion_sampling.py", ["--quick", "--workdir", str(diffusion_run[0])])
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["sampler", "steps"])
    rows = [line.split() for line in lines[start + 1:start + 3]]
    steps = diffusion_sampling.QUICK["sample_steps"]
    # the fixture's run: 10 class prompts, 50 diffusion steps; --quick: one image per prompt in each row
    assert [r[:3] for r in rows] == [["ddim", str(steps), "10"], ["ddpm", "50", "10"]]
    for r in rows:
        assert float(r[3]) >= 0 and float(r[4]) >= 0 and float(r[5]) > 0  # compile s, seconds, images/s
    ratio = float(re.search(rf"DDIM {steps} steps draws ([\d.]+)x the images/s of DDPM 50 steps", out)[1])
    ddim, ddpm = float(rows[0][5]), float(rows[1][5])  # all three printed to 1 decimal: allow for the rounding
    assert (ddim - 0.05) / (ddpm + 0.05) - 0.05 <= ratio <= (ddim + 0.05) / (ddpm - 0.05) + 0.05


def test_diffusion_sampling_refuses_bad_input(diffusion_run, rnn_run, capsys):
    assert "exceeds the run's 50" in exits_2(diffusion_sampling.main, ["--workdir", str(diffusion_run[0]),
                                                                       "--sample-steps", "51"], capsys)
    assert "language_model run" in exits_2(diffusion_sampling.main, ["--workdir", str(rnn_run[0])], capsys)
    assert "--ddim-samples" in exits_2(diffusion_sampling.main, ["--quick", "--ddim-samples", "0"], capsys)


def test_quick_tiny_run_flags(tmp_path):
    """--quick without --workdir trains TINY_RUN: flags the experiment takes, enough steps for --quick's DDIM."""
    cfg = cli.parse(diffusion.Config, [*diffusion_sampling.TINY_RUN, "--workdir", str(tmp_path / "run")])
    assert cfg.timesteps >= diffusion_sampling.QUICK["sample_steps"]
