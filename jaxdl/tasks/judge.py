"""Judging generated images offline: a MyNet classifier trained on the real training split.

It labels generated images (does a "seven" prompt give sevens?) and embeds images in its
penultimate layer (fc1, 512 features), where the Frechet distance between generated and real test
images is measured, next to the same distance between real train and real test images (the floor
a perfect generator would reach with as many images).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
import scipy.linalg

from jaxdl.data.augment import ImagePreprocess
from jaxdl.data.batches import epoch_batches, eval_batches, steps_per_epoch
from jaxdl.data.images import ImageDataset
from jaxdl.models.cnn import MyNet
from jaxdl.tasks.classification import ImageClassifier
from jaxdl.tasks.run_info import classifier_info
from jaxdl.train import TrainConfig, TrainState, fit, make_optimizer, make_train_step


BATCH_SIZE = 64  # the MyNet recipe's; the real training images must fill one batch

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
        cfg = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, seed=seed, workdir=workdir, log_every=50)
        train = {"image": data.train.images, "label": data.train.labels}
        test = {"image": data.test.images, "label": data.test.labels}
        spe = steps_per_epoch(len(data.train), cfg.batch_size)
        optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay)
        params = self.classifier.init(jax.random.key(seed), next(eval_batches(test, 1)))
        info = classifier_info(self.classifier.model, params, self.classifier.preprocess, data.name,
                               data.class_names, data.train.images.shape[1:])
        result = fit(TrainState.create(params, optimizer, seed), make_train_step(self.classifier.loss, optimizer),
                     epoch_batches(train, cfg.batch_size, seed), spe,
                     lambda p: self.classifier.evaluate(p, eval_batches(test, 256)), cfg,
                     best_metric="accuracy", best_mode="max", resolved={"dataset": data.name, "judge": "MyNet"},
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


IMAG_TOLERANCE = 1e-3  # an imaginary part up to this fraction of the root's scale is round-off
RESIDUAL_TOLERANCE = 1e-6  # ||X X - A||_F / ||A||_F above this: sqrtm did not find a root


def _sqrt_product(s_a: np.ndarray, s_b: np.ndarray) -> tuple[np.ndarray, str | None]:
    """scipy's square root of S_a S_b, and what is wrong with it (None: a real root up to round-off)."""
    product = s_a @ s_b
    root = np.asarray(scipy.linalg.sqrtm(product))
    if not np.all(np.isfinite(root)):
        return root, "is not finite"
    norm = np.linalg.norm(product)
    imag = float(np.max(np.abs(root.imag))) if np.iscomplexobj(root) else 0.0
    scale = float(np.sqrt(norm))  # the size of a square root of the product
    if imag > IMAG_TOLERANCE * scale:
        return root, f"has an imaginary part of {imag:.3g} (its scale is {scale:.3g})"
    root = root.real
    residual = np.linalg.norm(root @ root - product) / max(norm, np.finfo(np.float64).tiny)
    if residual > RESIDUAL_TOLERANCE:
        return root, f"is inaccurate (relative residual {residual:.3g})"
    return root, None


def frechet_distance(a_NF: np.ndarray, b_MF: np.ndarray, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two feature sets
    (rows are examples; sample means and covariances, in float64).

    S_a S_b is similar to the PSD S_a^(1/2) S_b S_a^(1/2), so its square root is real: the imaginary
    part scipy's `sqrtm` returns is round-off, dropped when it is at most IMAG_TOLERANCE of the root's
    scale (sqrt ||S_a S_b||_F). When the product is near-singular (e.g. nearly orthogonal low-rank
    covariances) the root can come back non-finite, inaccurate or with a larger imaginary part; then
    `eps` is added to both covariances' diagonals and the root taken again, as the reference FID
    implementations (TTUR's, pytorch-fid) do, and the distance is that between the offset Gaussians.
    The offset moves the distance by about 2 sqrt(eps lambda) for each direction one covariance lacks
    (lambda: the other's variance there), so it is only used when needed. A root still wrong after it
    raises ValueError naming the size of the imaginary part (or the residual).
    """
    a_NF, b_MF = np.asarray(a_NF, np.float64), np.asarray(b_MF, np.float64)
    if a_NF.ndim != 2 or b_MF.ndim != 2 or a_NF.shape[1] != b_MF.shape[1] or min(len(a_NF), len(b_MF)) < 2:
        raise ValueError(f"the Frechet distance needs two (examples, features) arrays with the same features "
                         f"and at least 2 examples each, got shapes {a_NF.shape} and {b_MF.shape}")
    mu_a, mu_b = a_NF.mean(0), b_MF.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a_NF, rowvar=False)), np.atleast_2d(np.cov(b_MF, rowvar=False))
    covmean, trouble = _sqrt_product(s_a, s_b)
    if trouble:
        s_a, s_b = s_a + eps * np.eye(len(s_a)), s_b + eps * np.eye(len(s_b))
        covmean, trouble = _sqrt_product(s_a, s_b)
        if trouble:
            raise ValueError(f"the square root of the feature covariances' product {trouble}, even with {eps:g} "
                             f"added to their diagonals: the features are too degenerate for a Frechet distance")
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
