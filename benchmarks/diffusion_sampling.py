"""Sampling speed of a trained text-to-image run: DDIM (few steps) against DDPM (all T steps).

    python benchmarks/diffusion_sampling.py [--workdir runs/diffusion] [--checkpoint latest]
        [--ddim-samples 50] [--ddpm-samples 5] [--sample-steps 50] [--eta 0] [--guidance 1] [--quick]

Loads the run with `jaxdl.load` (its model.json gives the model, the noise schedule and the class
prompts) and draws, from its EMA parameters, images for every class prompt with
  ddim   --sample-steps steps, eta --eta, guidance --guidance
  ddpm   all T steps of the run's schedule, guidance --guidance
each one jitted `lax.scan` vmapped over the prompts, compiled ahead of time (compile seconds
reported apart). images/s = images drawn / seconds of the compiled call. Guidance costs the same
at any weight: the conditional and null predictions share one batch.

--quick checks the script end to end: one image per prompt in each row, 3 DDIM steps (flags given
still win), from --workdir if given, else from a tiny run it first trains in a temporary folder
(`experiments/diffusion.py` with TINY_RUN's flags: a minute or two on a laptop CPU, most of it
compiling); its figures measure nothing.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxdl import runtime  # noqa: E402

runtime.configure(__file__)  # before jax is imported (and where run as a script, with huge pages)

import jax  # noqa: E402

import jaxdl  # noqa: E402
from jaxdl import cli  # noqa: E402
from jaxdl.cli import field  # noqa: E402
from jaxdl.data import captions  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.tasks.text_to_image import SamplerConfig  # noqa: E402
from jaxdl.train.metrics import device_description  # noqa: E402

WORKDIR = "runs/diffusion"
FULL = {"ddim_samples": 50, "ddpm_samples": 5, "sample_steps": 50}
QUICK = {"ddim_samples": 1, "ddpm_samples": 1, "sample_steps": 3}
# experiments/diffusion.py flags of --quick's own run: the smallest U-Net and text encoder, a few steps
TINY_RUN = ["--channels", "8", "--levels", "1", "--blocks", "1", "--heads", "2", "--text-layers", "1",
            "--text-width", "16", "--batch-size", "16", "--timesteps", "20", "--sample-steps", "2",
            "--num-samples", "1", "--judge-epochs", "1", "--steps", "2", "--eval-every", "2", "--log-every", "2",
            "--lr-schedule", "constant", "--warmup-steps", "0"]


@dataclasses.dataclass
class Config:
    workdir: str | None = field(None, f"a trained run of experiments/diffusion.py (none: {WORKDIR}, or with --quick "
                                      "a tiny run trained first)")
    checkpoint: str = field("latest", "best | latest | a step number")
    ddim_samples: int | None = field(None, f"images per class prompt for the DDIM row (none: {FULL['ddim_samples']}, "
                                           f"or {QUICK['ddim_samples']} with --quick)")
    ddpm_samples: int | None = field(None, "images per class prompt for the DDPM row, which takes all T steps (none: "
                                           f"{FULL['ddpm_samples']}, or {QUICK['ddpm_samples']} with --quick)")
    sample_steps: int | None = field(None, f"DDIM steps (none: {FULL['sample_steps']}, or {QUICK['sample_steps']} "
                                           "with --quick)")
    eta: float = field(0.0, "DDIM noise: 0 = deterministic")
    guidance: float = field(1.0, "classifier-free guidance weight")
    quick: bool = field(False, "check the script end to end in little time (see above)")

    def __post_init__(self) -> None:
        for name, value in (QUICK if self.quick else FULL).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("ddim_samples", "ddpm_samples", "sample_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.eta >= 0 or not self.guidance >= 0:
            raise UsageError(f"--eta and --guidance must be >= 0, got {self.eta} and {self.guidance}")


def train_tiny_run(folder: str) -> str:
    """--quick without --workdir: train TINY_RUN in `folder`; returns its workdir."""
    workdir = os.path.join(folder, "diffusion")
    print(f"training a tiny run: experiments/diffusion.py {' '.join(TINY_RUN)}", flush=True)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "diffusion.py"), *TINY_RUN,
                           "--workdir", workdir], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"experiments/diffusion.py exited with status {done.returncode}:\n{done.stderr[-2000:]}")
    return workdir


def parse_args(argv) -> Config:
    return cli.parse(Config, argv, __doc__)


def main(argv: list[str] | None = None) -> list[tuple]:
    cfg = parse_args(argv)
    if cfg.workdir is None and cfg.quick:
        with tempfile.TemporaryDirectory(prefix="jaxdl-diffusion-") as folder:
            return sample_speed(cfg, train_tiny_run(folder), "a tiny run (--quick)")
    workdir = cfg.workdir or WORKDIR
    return sample_speed(cfg, workdir, workdir)


def sample_speed(cfg: Config, workdir: str, label: str) -> list[tuple]:
    """Both rows, timed, and their table (under `label`, the run's name); returns the rows."""
    model = jaxdl.load(workdir, int(cfg.checkpoint) if cfg.checkpoint.isdigit() else cfg.checkpoint)
    if model.family != "diffusion":
        raise UsageError(f"{workdir} is a {model.family} run: give a run of experiments/diffusion.py")
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
    print(f"\n{label} at step {model.step}, {shape[0]}x{shape[1]}, guidance {cfg.guidance}; "
          f"device {device_description()}")
    print(f"{'sampler':8} {'steps':>6} {'images':>7} {'compile s':>10} {'seconds':>8} {'images/s':>9}")
    for sampler, steps, images, compile_s, seconds, ips in rows:
        print(f"{sampler:8} {steps:>6} {images:>7} {compile_s:>10.1f} {seconds:>8.1f} {ips:>9.1f}")
    ddim, ddpm = rows[0][-1], rows[1][-1]
    print(f"DDIM {cfg.sample_steps} steps draws {ddim / ddpm:.1f}x the images/s of DDPM {T} steps")
    return rows


if __name__ == "__main__":
    cli.run(main)
