"""Judging generated images offline: a MyNet classifier trained on the real training split.

It labels generated images (does a "seven" prompt give sevens?) and embeds images in its
penultimate layer (fc1, 512 features), where the Frechet distance between generated and real test
images is measured, next to the same distance between real train and real test images (the floor
a perfect generator would reach with as many images).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import numpy as np
import scipy.linalg

from jaxdl.data.augment import ImagePreprocess
from jaxdl.data.batches import eval_batches, steps_per_epoch, train_batches
from jaxdl.data.images import ImageDataset
from jaxdl.models.cnn import MyNet
from jaxdl.tasks.classification import ImageClassifier
from jaxdl.tasks.run_info import classifier_info
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step


class Judge:
    def __init__(self, data: ImageDataset, image_size: int):
        self.image_size = image_size
        model = MyNet(data.num_classes, image_size, data.channels)
        preprocess = ImagePreprocess(image_size, data.channels, data.mean, data.std)  # the MyNet recipe's jitter
        self.classifier = ImageClassifier(model, preprocess)
        self._features = jax.jit(self._features_fn)
        self.params: Any = None

    def train(self, data: ImageDataset, workdir: str, epochs: int = 30, seed: int = 0) -> float:
        """Train (or, from `workdir`'s checkpoint, restore) on the real training split; the test accuracy."""
        print(f"Judge: MyNet trained on the real training images ({workdir}; reused when it is there)")
        cfg = TrainConfig(epochs=epochs, seed=seed, workdir=workdir, log_every=50)
        train = {"image": data.train.images, "label": data.train.labels}
        test = {"image": data.test.images, "label": data.test.labels}
        spe = steps_per_epoch(len(data.train), cfg.batch_size)
        optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay)
        params = self.classifier.init(jax.random.key(seed), next(eval_batches(test, 1)))
        info = classifier_info(self.classifier.model, params, self.classifier.preprocess, data.name,
                               data.class_names, data.train.images.shape[1:])
        result = fit(TrainState.create(params, optimizer, seed), make_train_step(self.classifier.loss, optimizer),
                     functools.partial(train_batches, train, cfg.batch_size, seed), spe,
                     lambda p: self.classifier.evaluate(p, eval_batches(test, 256)), cfg,
                     best_metric="accuracy", best_mode="max", identity={"dataset": data.name, "judge": "MyNet"},
                     length_flag="--judge-epochs", describe=info)
        self.params = result.state.params
        return float(result.eval_metrics["accuracy"])

    def predict(self, images_uint8: np.ndarray) -> np.ndarray:
        labels = np.zeros(len(images_uint8), np.int32)
        out = self.classifier.evaluate(self.params, eval_batches({"image": images_uint8, "label": labels}, 256))
        return out["outputs"]["predictions"]

    def _features_fn(self, params: Any, images: jax.Array) -> jax.Array:
        x = self.classifier.preprocess.eval(images)
        _, state = self.classifier.model.apply(params, x, capture_intermediates=lambda m, _: m.name == "fc1",
                                               mutable=["intermediates"])
        return state["intermediates"]["fc1"]["__call__"][0]

    def features(self, images_uint8: np.ndarray) -> np.ndarray:
        """fc1 activations (before its ReLU), (N, 512), float64."""
        out = []
        for batch in eval_batches({"image": images_uint8}, 256):
            out.append(np.asarray(self._features(self.params, batch["image"]), np.float64)[batch["mask"]])
        return np.concatenate(out)


def frechet_distance(a_NF: np.ndarray, b_MF: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two feature sets."""
    mu_a, mu_b = a_NF.mean(0), b_MF.mean(0)
    s_a, s_b = np.cov(a_NF, rowvar=False), np.cov(b_MF, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    if np.iscomplexobj(covmean):  # round-off gives tiny imaginary parts
        covmean = covmean.real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def to_uint8(images_01: Any) -> np.ndarray:
    return np.round(np.asarray(images_01) * 255.0).astype(np.uint8)


@dataclasses.dataclass
class Verdict:
    sample_accuracy: float
    frechet_distance: float
    frechet_floor: float


def judge_samples(judge: Judge, data: ImageDataset, images_uint8: np.ndarray, labels: np.ndarray,
                  seed: int = 0) -> Verdict:
    """Accuracy of the judge's labels against the prompts' classes; FD to real test images, and the floor
    (as many real train images as generated ones, vs real test)."""
    accuracy = float((judge.predict(images_uint8) == labels).mean())
    test_f = judge.features(data.test.images)
    pick = np.random.default_rng(seed).permutation(len(data.train))[:len(images_uint8)]
    return Verdict(accuracy, frechet_distance(judge.features(images_uint8), test_f),
                   frechet_distance(judge.features(data.train.images[pick]), test_f))


def judge_workdir(workdir: str) -> str:
    return os.path.join(workdir, "judge")
