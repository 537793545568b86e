"""Small vector datasets for MLPs: xor, sine, digits (64 pixel features). All offline, all fixed."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdl.data.images import load_digits
from jaxdl.errors import UsageError

TASKS = ("xor", "sine", "digits")


@dataclasses.dataclass
class VectorDataset:
    name: str
    train: dict[str, np.ndarray]  # x: float32 (N, D); y: float32 (N, K) targets or int32 (N,) labels
    test: dict[str, np.ndarray]
    outputs: int  # model outputs: 1 for xor (one logit) and sine, 10 for digits


def xor() -> VectorDataset:
    """The four corners of the unit square; the label is x1 XOR x2. Train and test are the same 4 points."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    return VectorDataset("xor", {"x": x, "y": y}, {"x": x, "y": y}, 1)


def sine(n_train: int = 512, n_test: int = 200) -> VectorDataset:
    """y = sin(x) on [-pi, pi]: random training points, an even grid for testing."""
    x_train = np.random.default_rng(0).uniform(-np.pi, np.pi, (n_train, 1)).astype(np.float32)
    x_test = np.linspace(-np.pi, np.pi, n_test, dtype=np.float32)[:, None]
    return VectorDataset("sine", {"x": x_train, "y": np.sin(x_train)}, {"x": x_test, "y": np.sin(x_test)}, 1)


def digits() -> VectorDataset:
    """scikit-learn's 8x8 digits as 64 features in [0, 1], the same fixed split as the image task."""
    d = load_digits()
    flat = lambda s: {"x": s.images.reshape(len(s), -1).astype(np.float32) / 255.0, "y": s.labels}
    return VectorDataset("digits", flat(d.train), flat(d.test), 10)


def load_vectors(task: str) -> VectorDataset:
    if task not in TASKS:
        raise UsageError(f"unknown --task {task!r}: use one of {', '.join(TASKS)}")
    return {"xor": xor, "sine": sine, "digits": digits}[task]()
