"""Text-to-image diffusion: train a text-conditioned U-Net on captioned class images, then draw
images from prompts and judge them.

    python experiments/diffusion.py --prompt "a handwritten seven"    # bundled digits, offline
    python experiments/diffusion.py --sample-only --prompt "the digit 3|a handwritten nine"
    python experiments/diffusion.py --dataset fashion_mnist --image-size 28 --prompt "a sandal"

Captions come from the class labels ("a handwritten seven", "the digit 7", "7", ...). After
training (or, with --sample-only, from the workdir's checkpoint) the EMA parameters draw
--num-samples images per prompt (several prompts: separate them with '|'; default: one per class).
A MyNet judge trained on the real training split labels images drawn for every class, and the
Frechet distance in its features compares them with the real test images.

Writes --workdir: summary.json, metrics.jsonl, checkpoints/, curves.png, samples.png (one row per
prompt), samples.npz (images N,H,W,C in [0, 1], labels, prompts), judge/ (the judge's own run).
Running the same command again resumes; a larger --steps continues a finished run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdl import runtime  # noqa: E402

runtime.configure(__file__)  # before jax is imported (and where run as a script, with huge pages)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdl import cli, plots  # noqa: E402
from jaxdl.cli import field, fixed  # noqa: E402
from jaxdl.data import captions  # noqa: E402
from jaxdl.data.batches import cycled_batches, eval_batches  # noqa: E402
from jaxdl.data.images import ImageDataset, check_spec, load_images, resized  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.models.unet import TextConditionedUNet, check_image_size  # noqa: E402
from jaxdl.tasks.diffusion import SAMPLERS, SCHEDULES, make_schedule  # noqa: E402
from jaxdl.tasks.judge import BATCH_SIZE as JUDGE_BATCH, Judge, judge_samples, judge_workdir, to_uint8  # noqa: E402
from jaxdl.tasks.run_info import diffusion_info  # noqa: E402
from jaxdl.tasks.text_to_image import SamplerConfig, TextToImage  # noqa: E402
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step  # noqa: E402
from jaxdl.train import description, run_config  # noqa: E402
from jaxdl.train.checkpoint import load_trained  # noqa: E402
from jaxdl.train.config import SCHEDULES as LR_SCHEDULES  # noqa: E402
from jaxdl.train.config import run_name  # noqa: E402
from jaxdl.train.flops import speed_note  # noqa: E402
from jaxdl.train.metrics import device_description, write_summary  # noqa: E402
from jaxdl.train.state import num_params, step_of  # noqa: E402
from jaxdl.train.step import ema_extras  # noqa: E402
from jaxdl.train.warm_start import warm_start  # noqa: E402


@dataclasses.dataclass
class Config(TrainConfig):
    dataset: str = field("digits", "digits | mnist | fashion_mnist | tfds:NAME | folder:PATH")
    data_dir: str = field("", "TFDS data directory (default: TFDS's own)", resume="free")
    image_size: int = field(0, "train and sample at this height and width; 0 = the dataset's own")
    steps: int = field(1000, "training steps in all; a larger value continues a finished run", resume="length")
    eval_every: int = field(250, "evaluate the held-out denoising loss and checkpoint every N steps")
    batch_size: int = field(128, "images per training step")
    lr: float = field(1e-3, "peak learning rate")
    weight_decay: float = field(0.0, "L2 for adam/sgd/rmsprop, decoupled decay for adamw")
    lr_schedule: str = field("cosine", "learning-rate schedule: constant | cosine (decays to 0 at the end)")
    warmup_steps: int = field(100, "linear learning-rate warmup from 0 over this many steps")
    clip_norm: float = field(1.0, "clip gradients to this global norm; 0 = off")
    schedule: str = field("cosine", "noise schedule: linear (1e-4..0.02) | cosine (Nichol & Dhariwal)")
    timesteps: int = field(1000, "diffusion steps T")
    min_snr_gamma: float = field(5.0, "weight the loss by min(SNR, gamma) / SNR; 0 = unweighted")
    uncond_prob: float = field(0.15, "drop the prompt with this probability (for classifier-free guidance)")
    ema_decay: float = field(0.999, "decay of the parameters' moving average that samples are drawn with")
    channels: int = field(32, "U-Net width at full resolution (doubling at each lower level)")
    levels: int = field(2, "U-Net resolutions; the image size must halve levels - 1 times")
    blocks: int = field(2, "residual blocks per U-Net level")
    heads: int = field(4, "attention heads (U-Net self/cross-attention and text encoder)")
    dropout: float = field(0.0, "dropout in the U-Net's residual blocks and the text encoder")
    text_layers: int = field(2, "text encoder transformer layers")
    text_width: int = field(64, "text encoder width")
    max_prompt_bytes: int = field(47, "longest prompt in UTF-8 bytes")
    sampler: str = field("ddim", "ddpm (all T steps) | ddim", resume="free")
    sample_steps: int = field(50, "DDIM steps (1..T)", resume="free")
    eta: float = field(0.0, "DDIM noise: 0 = deterministic, 1 = DDPM's variance", resume="free")
    guidance: float = field(1.0, "classifier-free guidance weight w >= 0 (0 = conditional only)", resume="free")
    prompt: str = field("", "prompts to draw, separated by '|'; empty = one per class", resume="free")
    num_samples: int = field(50, "images per prompt (and per class for the judged samples)", resume="free")
    sample_only: bool = field(False, "skip training: draw from the workdir's checkpoint", resume="free")
    judge_epochs: int = field(30, "epochs for the MyNet judge trained on the real images", resume="free")
    epochs: int = fixed(1)  # counted in --steps

    def lr_schedule_flag(self) -> tuple[str, str]:
        return "--lr-schedule", self.lr_schedule

    def default_workdir(self) -> str:
        return run_name("diffusion", self.changed("dataset"))

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "eval_every", "timesteps", "channels", "levels", "blocks", "heads", "text_layers",
                     "text_width", "max_prompt_bytes", "num_samples", "judge_epochs"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown --schedule {self.schedule!r} (the noise schedule): use one of "
                             f"{', '.join(SCHEDULES)}; the learning rate's is --lr-schedule {'|'.join(LR_SCHEDULES)}")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"unknown --sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}")
        if not 1 <= self.sample_steps <= self.timesteps:
            raise UsageError(f"--sample-steps must be in 1..{self.timesteps} (--timesteps), got {self.sample_steps}")
        if not self.guidance >= 0:
            raise UsageError(f"--guidance must be >= 0 (0 = no guidance), got {self.guidance}")
        if not 0 < self.uncond_prob < 1:
            raise UsageError(f"--uncond-prob must be in (0, 1) (guidance needs both prompts), got {self.uncond_prob}")
        for name in ("min_snr_gamma", "eta"):
            if not getattr(self, name) >= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise UsageError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.image_size <= 256:
            raise UsageError(f"--image-size must be in 0..256 (0 = the dataset's own; the MyNet judge's dense layer "
                             f"grows with its square), got {self.image_size:,}")
        if self.channels % self.heads or self.text_width % self.heads:
            raise UsageError(f"--heads {self.heads} must divide --channels {self.channels} and --text-width "
                             f"{self.text_width}")
        # Sizes past these cannot be allocated (--eval-every: an evaluation at least that often).
        for name, most in (("timesteps", 100_000), ("eval_every", 100_000), ("levels", 16), ("blocks", 1024),
                           ("text_layers", 1024), ("text_width", 2 ** 14), ("max_prompt_bytes", 4096),
                           ("num_samples", 10_000)):
            if getattr(self, name) > most:
                raise UsageError(f"--{name.replace('_', '-')} must be at most {most:,}, got {getattr(self, name):,}: "
                                 "lower it")
        if self.channels << (self.levels - 1) > 2 ** 14:
            raise UsageError(f"--channels {self.channels:,} doubled over {self.levels} --levels is wider than "
                             f"{2 ** 14:,} at the lowest level: lower --channels or --levels")
        if self.eta > 1:
            raise UsageError(f"--eta must be in [0, 1] (1 = DDPM's variance), got {self.eta}")
        if self.guidance > 100:
            raise UsageError(f"--guidance must be at most 100 (typical: 1 to 10), got {self.guidance}")
        check_spec(self.dataset, self.data_dir)
        if self.prompt:  # each prompt must fit the text encoder
            prompts = captions.parse_prompts(self.prompt)
            try:
                captions.encode(prompts, self.max_prompt_bytes + 1)
            except UsageError as e:
                raise UsageError(f"--prompt: {e}") from None

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(self.sampler, self.sample_steps, self.eta, self.guidance)


def build_model(cfg: Config, channels: int) -> TextConditionedUNet:
    unet = dict(out_channels=channels, channels=cfg.channels, levels=cfg.levels, blocks=cfg.blocks,
                num_heads=cfg.heads, dropout=cfg.dropout)
    text = dict(vocab_size=captions.VOCAB_SIZE, d_model=cfg.text_width, num_layers=cfg.text_layers,
                num_heads=cfg.heads, max_len=cfg.max_prompt_bytes + 1, dropout=cfg.dropout, pos="learned")
    return TextConditionedUNet(unet=unet, text=text)


def draw(task: TextToImage, params, prompts: list[str], max_len: int, key: jax.Array, shape: tuple, n: int,
         sampler: SamplerConfig) -> tuple[np.ndarray, float]:
    """Images (P, n, H, W, C) in [0, 1], and images per second (compilation excluded)."""
    tokens, lengths = captions.encode(prompts, max_len)
    run = task.compiled_sampler(params, tokens, lengths, key, shape, n, sampler)
    t0 = time.perf_counter()
    images = np.asarray(jax.block_until_ready(run()))
    return images, images.shape[0] * images.shape[1] / (time.perf_counter() - t0)


@dataclasses.dataclass
class Setup:
    data: ImageDataset  # resized to the training size
    shape: tuple[int, int, int]  # (H, W, C) of model images
    task: TextToImage
    optimizer: Any
    state: TrainState  # freshly initialised (EMA extras included)
    class_prompts: list[str]  # each class's canonical caption
    info: dict  # model.json


def check_judgeable(data: ImageDataset, size: int, cfg: Config) -> None:
    """Everything the run meets after training (the judge, the samples) checked before it trains."""
    if size % 4:
        raise UsageError(f"--image-size {size}: the samples are judged by a MyNet (two 2x2 pools), which needs a "
                         "multiple of 4: choose one such as " + f"{size - size % 4 or 4} or {size + 4 - size % 4}")
    if len(data.train) < JUDGE_BATCH:
        raise UsageError(f"{data.name} has {len(data.train)} training images; the MyNet judge trains on batches of "
                         f"{JUDGE_BATCH}: give it at least {JUDGE_BATCH}")
    if len(data.test) < 2:
        raise UsageError(f"{data.name} has {len(data.test)} test image(s); judging the samples (the Frechet distance "
                         "of real test images) needs at least 2")
    if len(data.train) < cfg.batch_size:
        raise UsageError(f"--batch-size {cfg.batch_size} exceeds the {len(data.train)} training images: lower it")


def setup(cfg: Config) -> Setup:
    """Load and resize the data, build the model and task, initialise the state; bad input -> UsageError."""
    data = load_images(cfg.dataset, cfg.data_dir or None, cfg.image_size or None)
    H, W, C = data.train.images.shape[1:]
    size = cfg.image_size or H
    if not cfg.image_size and H != W:
        raise UsageError(f"{data.name} images are {H}x{W}: pass a square --image-size")
    try:
        check_image_size(size, cfg.levels)
    except ValueError as e:
        raise UsageError(f"--image-size {size}, --levels {cfg.levels}: {e}") from None
    check_judgeable(data, size, cfg)
    data = resized(data, size)
    print(f"{data.name}: {len(data.train)} train / {len(data.test)} test images at {size}x{size}x{C}, "
          f"{data.num_classes} classes; device {device_description()}")
    table_tokens, table_lengths = captions.caption_table(data.class_names, cfg.max_prompt_bytes + 1)
    task = TextToImage(build_model(cfg, C), make_schedule(cfg.schedule, cfg.timesteps), table_tokens, table_lengths,
                       cfg.uncond_prob, cfg.min_snr_gamma)
    optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay, momentum=cfg.momentum,
                               schedule=cfg.lr_schedule, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                               clip_norm=cfg.clip_norm)
    params = task.init(jax.random.key(cfg.seed), {"image": data.test.images[:1], "label": data.test.labels[:1]})
    print(f"text-conditioned U-Net: {cfg.levels} levels x {cfg.blocks} blocks, width {cfg.channels}; text encoder "
          f"{cfg.text_layers} x {cfg.text_width}; {num_params(params):,} parameters")
    class_prompts = [phrasings[0] for phrasings in captions.captions(data.class_names)]
    info = diffusion_info(task.model, params, data.name, (size, size, C), cfg.schedule, cfg.timesteps,
                          data.class_names, class_prompts, cfg.max_prompt_bytes)
    params = warm_start(cfg.warm_start_from(), params, info)
    state = TrainState.create(params, optimizer, cfg.seed, extras=ema_extras(params))
    return Setup(data, (size, size, C), task, optimizer, state, class_prompts, info)


def resolved(run: Setup) -> dict:
    return {"dataset": run.data.name, "image_size": run.shape[0]}


def train(cfg: Config, run: Setup) -> tuple[TrainState, dict]:
    """The engine's fit with an EMA of the params (evaluated and sampled from); the state and its timings."""
    train_set = {"image": run.data.train.images, "label": run.data.train.labels}
    test_set = {"image": run.data.test.images, "label": run.data.test.labels}
    result = fit(run.state, make_train_step(run.task.loss, run.optimizer, ema_decay=cfg.ema_decay),
                 cycled_batches(train_set, cfg.batch_size, cfg.seed),
                 cfg.eval_every, lambda p: run.task.evaluate(p, eval_batches(test_set, 256), cfg.seed), cfg,
                 resolved=resolved(run), total_steps=cfg.steps,
                 eval_params=lambda s: s.extras["ema"], describe=run.info)
    return result.state, {"train_examples_per_sec": result.train_examples_per_sec,
                          "compile_seconds": result.compile_seconds,
                          "model_flops_per_example": result.flops_per_example, "mfu": result.mfu,
                          "matmul_peak_gflops": result.matmul_peak_gflops}


def draw_and_judge(cfg: Config, run: Setup, params, grid_prompts: list[str]) -> dict:
    """Draw --num-samples images per class prompt and judge them; draw the grid's prompts; write
    samples.png and samples.npz; the summary's quality and speed keys."""
    data, (size, _, C) = run.data, run.shape
    judge = Judge(data, size)
    judge_accuracy = judge.train(data, judge_workdir(cfg.workdir), cfg.judge_epochs, cfg.seed)
    sampler, max_len = cfg.sampler_config(), cfg.max_prompt_bytes + 1
    key = jax.random.fold_in(jax.random.key(cfg.seed), 2)
    print(f"Drawing {cfg.num_samples} images for each of {data.num_classes} class prompts ({cfg.sampler}"
          f"{f', {cfg.sample_steps} steps' if cfg.sampler == 'ddim' else ''}, guidance {cfg.guidance}) ...", flush=True)
    class_images, images_per_sec = draw(run.task, params, run.class_prompts, max_len, key, run.shape, cfg.num_samples,
                                        sampler)
    labels = np.repeat(np.arange(data.num_classes), cfg.num_samples)
    verdict = judge_samples(judge, data, to_uint8(class_images.reshape(-1, size, size, C)), labels, cfg.seed)
    grid = class_images
    if grid_prompts != run.class_prompts:
        grid, _ = draw(run.task, params, grid_prompts, max_len, jax.random.fold_in(key, 1), run.shape,
                       cfg.num_samples, sampler)
    plots.sample_grid(grid, grid_prompts, os.path.join(cfg.workdir, "samples.png"))
    grid_labels = [captions.label_of(p, data.class_names) for p in grid_prompts]
    np.savez_compressed(os.path.join(cfg.workdir, "samples.npz"), images=grid.reshape(-1, size, size, C),
                        labels=np.repeat(np.asarray(grid_labels, np.int32), cfg.num_samples),
                        prompts=np.repeat(np.asarray(grid_prompts), cfg.num_samples))
    print(f"Judge ({judge_accuracy:.2%} on real test images): {verdict.sample_accuracy:.2%} of the samples show the "
          f"class their prompt names; Frechet distance {verdict.frechet_distance:.2f} (real train vs test: "
          f"{verdict.frechet_floor:.2f}); {images_per_sec:.1f} images/s")
    return {"sample_accuracy": verdict.sample_accuracy, "judge_test_accuracy": judge_accuracy,
            "frechet_distance": verdict.frechet_distance, "frechet_floor": verdict.frechet_floor,
            "sampling_images_per_sec": images_per_sec, "sampler": cfg.sampler,
            "sample_steps": cfg.sample_steps if cfg.sampler == "ddim" else cfg.timesteps, "guidance": cfg.guidance}


def main(argv=None) -> dict:
    cfg = cli.parse(Config, argv, __doc__)
    t0 = time.perf_counter()
    grid_prompts = captions.parse_prompts(cfg.prompt) if cfg.prompt else []
    captions.encode(grid_prompts, cfg.max_prompt_bytes + 1)  # a prompt that does not fit stops here
    run = setup(cfg)
    if cfg.sample_only:  # the flags must describe the run that was trained (the rule of a resume)
        run_config.check(cfg.workdir, cfg, resolved(run))
        description.check(cfg.workdir, run.info)
        directory = cfg.checkpoint_dir or description.checkpoint_dir(cfg.workdir, description.read(cfg.workdir) or
                                                                      {"checkpoints": {}})
        state, timings = load_trained(run.state, directory, "--sample-only"), {}
        print(f"Sampling from step {step_of(state)} ({directory})")
    else:
        state, timings = train(cfg, run)
    summary = draw_and_judge(cfg, run, state.extras["ema"], grid_prompts or run.class_prompts)
    summary.update(timings)
    summary.update({"num_params": num_params(state.params), "steps": step_of(state), "dataset": run.data.name,
                    "image_size": run.shape[0], "device": device_description(),
                    "wall_seconds": time.perf_counter() - t0})
    speed = speed_note(summary.get("train_examples_per_sec"), "images", summary.get("mfu"))  # none with --sample-only
    print(f"summary: {write_summary(cfg.workdir, summary)}{speed}")
    return summary


if __name__ == "__main__":
    cli.run(main)
