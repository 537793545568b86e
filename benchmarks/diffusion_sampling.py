"""Sampling speed of a trained text-to-image run: DDIM (few steps) against DDPM (all T steps).

    python benchmarks/diffusion_sampling.py [--workdir runs/diffusion] [experiment flags ...]
        [--ddim-samples 50] [--ddpm-samples 5]

Takes the same flags as experiments/diffusion.py (the model must match the workdir's checkpoint)
and draws, from its EMA parameters, images for every class prompt with
  ddim   --sample-steps steps (default 50), eta --eta, guidance --guidance
  ddpm   all --timesteps steps (default 1,000), guidance --guidance
each one jitted `lax.scan` vmapped over the prompts, compiled ahead of time (compile seconds
reported apart). images/s = images drawn / seconds of the compiled call. Guidance costs the same
at any weight: the conditional and null predictions share one batch.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdl import runtime  # noqa: E402

runtime.configure_xla()  # before jax is imported

import jax  # noqa: E402

from experiments import diffusion  # noqa: E402
from jaxdl import cli  # noqa: E402
from jaxdl.cli import field  # noqa: E402
from jaxdl.data import captions  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.tasks.text_to_image import SamplerConfig  # noqa: E402
from jaxdl.train.metrics import device_description  # noqa: E402
from jaxdl.train.state import step_of  # noqa: E402


@dataclasses.dataclass
class Config(diffusion.Config):
    ddim_samples: int = field(50, "images per class prompt for the DDIM row")
    ddpm_samples: int = field(5, "images per class prompt for the DDPM row (it takes all --timesteps steps)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("ddim_samples", "ddpm_samples"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


def main(argv: list[str] | None = None) -> None:
    cfg = cli.parse(Config, argv, __doc__)
    counts = {"ddim": cfg.ddim_samples, "ddpm": cfg.ddpm_samples}
    run = diffusion.setup(cfg)
    state = diffusion.restore(run.state, cfg.workdir)
    tokens, lengths = captions.encode(run.class_prompts, cfg.max_prompt_bytes + 1)
    rows = []
    for sampler, steps in (("ddim", cfg.sample_steps), ("ddpm", cfg.timesteps)):
        config = SamplerConfig(sampler, min(steps, cfg.timesteps), cfg.eta, cfg.guidance)
        n = counts[sampler]
        t0 = time.perf_counter()
        draw = run.task.compiled_sampler(state.extras["ema"], tokens, lengths, jax.random.key(0), run.shape, n, config)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(draw())
        seconds = time.perf_counter() - t0
        images = n * len(run.class_prompts)
        rows.append((sampler, steps, images, compile_s, seconds, images / seconds))
    print(f"\n{cfg.workdir} at step {step_of(state)}, {run.shape[0]}x{run.shape[1]}, guidance {cfg.guidance}; "
          f"device {device_description()}")
    print(f"{'sampler':8} {'steps':>6} {'images':>7} {'compile s':>10} {'seconds':>8} {'images/s':>9}")
    for sampler, steps, images, compile_s, seconds, ips in rows:
        print(f"{sampler:8} {steps:>6} {images:>7} {compile_s:>10.1f} {seconds:>8.1f} {ips:>9.1f}")
    ddim, ddpm = rows[0][-1], rows[1][-1]
    print(f"DDIM {cfg.sample_steps} steps draws {ddim / ddpm:.1f}x the images/s of DDPM {cfg.timesteps} steps")


if __name__ == "__main__":
    cli.run(main)
