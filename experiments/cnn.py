"""Train MyNet, the seed CNN, with its MNIST recipe (defaults: batch 64, Adam 1e-3, L2 1e-4, 5 epochs, 48x48 RGB).

    python experiments/cnn.py                          # bundled digits, offline
    python experiments/cnn.py --dataset mnist          # TFDS (downloads once)
    python experiments/cnn.py --dataset folder:PATH    # PATH/<split>/<class>/*.png
    python experiments/cnn.py --norm batch             # batch norm after each convolution

Writes --workdir: summary.json, metrics.jsonl, checkpoints/, curves.png,
confusion_matrix.png. Running the same command again resumes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdl import runtime  # noqa: E402

runtime.configure(__file__)  # before jax is imported (and where run as a script, with huge pages)

import jax  # noqa: E402

from jaxdl import cli  # noqa: E402
from jaxdl.cli import field  # noqa: E402
from jaxdl.data.augment import ImagePreprocess  # noqa: E402
from jaxdl.data.batches import epoch_batches, eval_batches, steps_per_epoch  # noqa: E402
from jaxdl.data.images import check_spec, load_images  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.train.warm_start import warm_start  # noqa: E402
from jaxdl.models.cnn import MyNet  # noqa: E402
from jaxdl.tasks.model_state import check_norm  # noqa: E402
from jaxdl.tasks.classification import ImageClassifier, report  # noqa: E402
from jaxdl.tasks.run_info import classifier_info  # noqa: E402
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step  # noqa: E402
from jaxdl.train.config import run_name  # noqa: E402
from jaxdl.train.flops import speed_note  # noqa: E402
from jaxdl.train.metrics import device_description, write_summary  # noqa: E402
from jaxdl.train.state import num_params  # noqa: E402


@dataclasses.dataclass
class Config(TrainConfig):
    dataset: str = field("digits", "digits | mnist | fashion_mnist | cifar10 | tfds:NAME | folder:PATH")
    data_dir: str = field("", "TFDS data directory (default: TFDS's own, ~/tensorflow_datasets)", resume="free")
    image_size: int = field(48, "model input height and width; a multiple of 4")
    channels: int = field(3, "model input channels; grey images are copied to 3")
    num_classes: int = field(0, "output classes; 0 = the dataset's")
    pool: str = field("max", "pooling: max | avg")
    dropout: float = field(0.5, "dropout rate before each dense layer")
    norm: str = field("none", "none | batch (batch norm after each convolution, running statistics for evaluation)")
    rotation: float = field(10.0, "random rotation range in degrees (+-)")
    brightness: float = field(0.2, "brightness jitter")
    contrast: float = field(0.2, "contrast jitter")

    def default_workdir(self) -> str:
        return run_name("cnn", self.changed("dataset"), "batchnorm" if self.norm == "batch" else "")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size < 4 or self.image_size % 4:
            raise UsageError(f"--image-size must be a positive multiple of 4 (two 2x2 pools), got {self.image_size}")
        if self.channels not in (1, 3):
            raise UsageError(f"--channels must be 1 or 3, got {self.channels}")
        if self.pool not in ("max", "avg"):
            raise UsageError(f"--pool must be max or avg, got {self.pool!r}")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        check_norm(self.norm)
        for name in ("brightness", "contrast"):
            if not 0 <= getattr(self, name) < 1:
                raise UsageError(f"--{name} must be in [0, 1) (factors are drawn from [1 - j, 1 + j]), got {getattr(self, name)}")
        if not 0 <= self.rotation <= 180:
            raise UsageError(f"--rotation must be in [0, 180] degrees, got {self.rotation}")
        if self.num_classes < 0:
            raise UsageError(f"--num-classes must be >= 0 (0 = the dataset's), got {self.num_classes}")
        if self.image_size > 256:
            raise UsageError(f"--image-size must be at most 256 (MyNet's dense layer grows with its square: 268M "
                             f"weights at 256), got {self.image_size:,}")
        if self.num_classes > 100_000:
            raise UsageError(f"--num-classes must be at most 100,000, got {self.num_classes:,}")
        check_spec(self.dataset, self.data_dir)


def main(argv=None) -> dict:
    cfg = cli.parse(Config, argv, __doc__)
    t0 = time.perf_counter()
    data = load_images(cfg.dataset, cfg.data_dir or None, cfg.image_size)
    num_classes = cfg.num_classes or data.num_classes
    data.check_labels(num_classes)
    spe = steps_per_epoch(len(data.train), cfg.batch_size)
    if spe < 1:
        raise UsageError(f"--batch-size {cfg.batch_size} exceeds the {len(data.train)} training images: lower it")
    print(f"{data.name}: {len(data.train)} train / {len(data.test)} test images "
          f"{data.train.images.shape[1:]}, {num_classes} classes; device {device_description()}")
    model = MyNet(num_classes, cfg.image_size, cfg.channels, cfg.pool, cfg.dropout, cfg.norm)
    preprocess = ImagePreprocess(cfg.image_size, cfg.channels, data.mean, data.std,
                                 cfg.rotation, cfg.brightness, cfg.contrast)
    task = ImageClassifier(model, preprocess)
    print(task.summary())

    train = {"image": data.train.images, "label": data.train.labels}
    test = {"image": data.test.images, "label": data.test.labels}
    optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay, momentum=cfg.momentum, schedule=cfg.schedule,
                               warmup_steps=cfg.warmup_steps, total_steps=cfg.epochs * spe, clip_norm=cfg.clip_norm)
    example = next(eval_batches(test, 1))
    params = task.init(jax.random.key(cfg.seed), example)
    info = classifier_info(model, params, preprocess, data.name, data.class_names, data.train.images.shape[1:])
    params = warm_start(cfg.warm_start_from(), params, info, model=model,
                        init=lambda m: ImageClassifier(m, preprocess).init(jax.random.key(cfg.seed), example))
    state = TrainState.create(params, optimizer, cfg.seed)
    result = fit(state, make_train_step(task.loss, optimizer),
                 epoch_batches(train, cfg.batch_size, cfg.seed), spe,
                 lambda p: task.evaluate(p, eval_batches(test, cfg.batch_size)), cfg,
                 best_metric="accuracy", best_mode="max", resolved={"dataset": data.name}, describe=info)

    report(result.eval_metrics, data.class_names, cfg.workdir)
    summary = {
        "test_accuracy": result.eval_metrics["accuracy"], "test_loss": result.eval_metrics["loss"],
        "train_examples_per_sec": result.train_examples_per_sec, "compile_seconds": result.compile_seconds,
        "model_flops_per_example": result.flops_per_example, "mfu": result.mfu,
        "matmul_peak_gflops": result.matmul_peak_gflops, "num_params": num_params(params),
        "epochs": result.steps // spe, "steps": result.steps,
        "dataset": data.name, "device": device_description(), "wall_seconds": time.perf_counter() - t0,
    }
    speed = speed_note(result.train_examples_per_sec, "images", result.mfu)
    print(f"summary: {write_summary(cfg.workdir, summary)}{speed}")
    return summary


if __name__ == "__main__":
    cli.run(main)
