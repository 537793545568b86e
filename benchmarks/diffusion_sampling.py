"""Sampling speed of a trained text-to-image run: DDIM (few steps) against DDPM (all T steps).

    python benchmarks/diffusion_sampling.py [--workdir runs/diffusion] [--checkpoint latest]
        [--ddim-samples 50] [--ddpm-samples 5] [--sample-steps 50] [--eta 0] [--guidance 1]

Loads the run with `jaxdl.load` (its model.json gives the model, the noise schedule and the class
prompts) and draws, from its EMA parameters, images for every class prompt with
  ddim   --sample-steps steps, eta --eta, guidance --guidance
  ddpm   all T steps of the run's schedule, guidance --guidance
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

import jaxdl  # noqa: E402
from jaxdl import cli  # noqa: E402
from jaxdl.cli import field  # noqa: E402
from jaxdl.data import captions  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.tasks.text_to_image import SamplerConfig  # noqa: E402
from jaxdl.train.metrics import device_description  # noqa: E402


@dataclasses.dataclass
class Config:
    workdir: str = field("runs/diffusion", "a trained run of experiments/diffusion.py")
    checkpoint: str = field("latest", "best | latest | a step number")
    ddim_samples: int = field(50, "images per class prompt for the DDIM row")
    ddpm_samples: int = field(5, "images per class prompt for the DDPM row (it takes all T steps)")
    sample_steps: int = field(50, "DDIM steps")
    eta: float = field(0.0, "DDIM noise: 0 = deterministic")
    guidance: float = field(1.0, "classifier-free guidance weight")

    def __post_init__(self) -> None:
        for name in ("ddim_samples", "ddpm_samples", "sample_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.eta >= 0 or not self.guidance >= 0:
            raise UsageError(f"--eta and --guidance must be >= 0, got {self.eta} and {self.guidance}")


def main(argv: list[str] | None = None) -> list[tuple]:
    cfg = cli.parse(Config, argv, __doc__)
    model = jaxdl.load(cfg.workdir, int(cfg.checkpoint) if cfg.checkpoint.isdigit() else cfg.checkpoint)
    if model.family != "diffusion":
        raise UsageError(f"{cfg.workdir} is a {model.family} run: give a run of experiments/diffusion.py")
    spec = model.info["diffusion"]
    T, shape = spec["timesteps"], tuple(spec["image_shape"])
    if cfg.sample_steps > T:
        raise UsageError(f"--sample-steps {cfg.sample_steps} exceeds the run's {T} diffusion steps")
    tokens, lengths = captions.encode(model.class_prompts, spec["max_prompt_bytes"] + 1)
    counts = {"ddim": cfg.ddim_samples, "ddpm": cfg.ddpm_samples}
    rows = []
    for sampler, steps in (("ddim", cfg.sample_steps), ("ddpm", T)):
        config = SamplerConfig(sampler, steps, cfg.eta, cfg.guidance)
        n = counts[sampler]
        t0 = time.perf_counter()
        draw = model.task.compiled_sampler(model.params, tokens, lengths, jax.random.key(0), shape, n, config)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(draw())
        seconds = time.perf_counter() - t0
        images = n * len(model.class_prompts)
        rows.append((sampler, steps, images, compile_s, seconds, images / seconds))
    print(f"\n{cfg.workdir} at step {model.step}, {shape[0]}x{shape[1]}, guidance {cfg.guidance}; "
          f"device {device_description()}")
    print(f"{'sampler':8} {'steps':>6} {'images':>7} {'compile s':>10} {'seconds':>8} {'images/s':>9}")
    for sampler, steps, images, compile_s, seconds, ips in rows:
        print(f"{sampler:8} {steps:>6} {images:>7} {compile_s:>10.1f} {seconds:>8.1f} {ips:>9.1f}")
    ddim, ddpm = rows[0][-1], rows[1][-1]
    print(f"DDIM {cfg.sample_steps} steps draws {ddim / ddpm:.1f}x the images/s of DDPM {T} steps")
    return rows


if __name__ == "__main__":
    cli.run(main)
