"""Image classifiers (MyNet, an MLP on flattened digits): class probabilities for any images.

Images of any size and channel count are brought to the training data's size and channels, then
preprocessed as the run's evaluation did (resized to the model's input, grey/RGB, normalised with
the training set's mean and std). uint8 arrays are pixels 0..255; float arrays are read as 0..1.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.augment import ImagePreprocess, to_channels
from jaxdl.errors import UsageError
from jaxdl.inference.trained import Trained


def as_batch(images: Any) -> np.ndarray:
    """(N, H, W, C) float32 pixels in 0..255: uint8 (or other integer) arrays are pixels 0..255, float
    arrays 0..1, bool arrays ink (True) on black; (H, W) is one grey image, (H, W, C) with C in 1..4
    one image, (N, H, W) grey images; alpha is dropped."""
    try:
        raw = np.asarray(images)
    except ValueError:
        raise UsageError("images of different sizes: give them one at a time, or as files") from None
    if raw.dtype == bool:
        x = raw.astype(np.float32) * 255.0
    elif np.issubdtype(raw.dtype, np.integer):
        if raw.size and (raw.min() < 0 or raw.max() > 255):
            raise UsageError(f"integer pixels must be in 0..255, got {raw.min()}..{raw.max()}: scale them "
                             "(or give floats in [0, 1])")
        x = raw.astype(np.float32)
    elif np.issubdtype(raw.dtype, np.floating):
        if not np.isfinite(raw).all():
            raise UsageError("images hold NaN or infinite values")
        if raw.size and (raw.min() < 0 or raw.max() > 1):
            raise UsageError(f"float pixels must be in [0, 1], got {raw.min():.4g}..{raw.max():.4g}: divide by the "
                             "maximum (255 for 8-bit) or give uint8")
        x = raw.astype(np.float32) * 255.0
    else:
        raise UsageError(f"images must be uint8, float or bool arrays, got dtype {raw.dtype}")
    if x.ndim == 2:
        x = x[None, :, :, None]
    elif x.ndim == 3:
        x = x[None] if x.shape[-1] in (1, 2, 3, 4) else x[..., None]
    if x.ndim != 4 or min(x.shape[1:3], default=0) < 1 or len(x) == 0:
        raise UsageError(f"cannot read an array of shape {raw.shape} as images: give (H, W), (H, W, C), "
                         "(N, H, W) or (N, H, W, C)")
    C = x.shape[-1]
    if C in (2, 4):  # grey + alpha, RGBA
        x = x[..., :C - 1]
    elif C not in (1, 3):
        raise UsageError(f"images have {C} channels: the model takes grey (1) or RGB (3) images")
    return x


def crop_to_ink(x_HWC: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """The ink on a dark ground, as scikit-learn's digits were framed: the background (the median of
    the border) is subtracted and the rest stretched to 0..255; then the smallest square around the
    pixels above `threshold` of the brightest is cut out, the ink centred. Unchanged if all is flat."""
    grey = x_HWC.mean(-1)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    top = float(grey.max()) - background
    if top <= 0:
        return x_HWC
    x_HWC = np.clip((x_HWC - background) * (255.0 / top), 0.0, 255.0)
    ys, xs = np.nonzero(x_HWC.mean(-1) > threshold * 255.0)
    ink = x_HWC[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w, c = ink.shape
    side = max(h, w)
    square = np.zeros((side, side, c), x_HWC.dtype)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = ink
    return square


def read_image(path: str) -> np.ndarray:
    """One image file as uint8 (H, W, C): grey files (8- or 16-bit) stay 1-channel, others are RGB."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):  # 16-bit grey: 0..65535 -> 0..255
                x = np.round(np.asarray(im, np.float64) * (255.0 / 65535.0)).astype(np.uint8)
            elif im.mode in ("1", "L", "LA", "I", "F"):
                x = np.asarray(im.convert("L"), np.uint8)
            else:
                x = np.asarray(im.convert("RGB"), np.uint8)
    except Exception as e:  # PIL raises many types for files that are not images
        raise UsageError(f"cannot read image {path}: {type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0]}") from None
    return x[..., None] if x.ndim == 2 else x


class Classifier(Trained):
    """`predict(images)` -> class probabilities (N, K); `predict_files(paths)`; `class_names`."""

    @property
    def class_names(self) -> list[str]:
        return self.info["classifier"]["class_names"]

    def example_inputs(self) -> tuple:
        c = self.info["classifier"]
        x = jnp.zeros((1, c["input_size"], c["input_size"], c["input_channels"]), jnp.float32)
        return (x.reshape(1, -1) if c["flatten"] else x,)

    @functools.cached_property
    def preprocess(self) -> ImagePreprocess:
        c = self.info["classifier"]
        return ImagePreprocess(c["input_size"], c["input_channels"], tuple(c["mean"]), tuple(c["std"]))

    @functools.cached_property
    def _logits_fn(self):
        flatten = self.info["classifier"]["flatten"]

        def logits(params, x_BHWC):
            x = self.preprocess.eval(x_BHWC)
            return self.model.apply(params, x.reshape(len(x), -1) if flatten else x)

        return jax.jit(logits)

    def to_training_images(self, images: Any, invert: bool = False, crop: bool = False) -> np.ndarray:
        """Pixels (N, H, W, C) at the training data's size and channels (still 0..255 floats).

        invert: dark ink on a light background becomes light on dark (as digits and MNIST are);
        crop: each image is cut to its ink and centred in a square first (`crop_to_ink`)."""
        c = self.info["classifier"]
        x = as_batch(images)
        x = 255.0 - x if invert else x
        H, W = c["data_size"]
        resize = lambda im: np.asarray(jax.image.resize(im, (H, W, im.shape[-1]), "bilinear", antialias=True))
        if crop:
            x = np.stack([resize(crop_to_ink(im)) for im in x])
        x = np.asarray(to_channels(jnp.asarray(x), c["data_channels"]))
        if x.shape[1:3] != (H, W):
            x = np.asarray(jax.image.resize(x, (len(x), H, W, x.shape[-1]), "bilinear", antialias=True))
        return x

    def _logits_of_pixels(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        out = []
        for lo in range(0, len(x), batch_size):
            chunk = x[lo:lo + batch_size]
            padded = 1 << (len(chunk) - 1).bit_length()  # batch sizes in powers of two: few compiles
            chunk = np.concatenate([chunk, np.zeros((padded - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            out.append(np.asarray(self._logits_fn(self.params, chunk))[:min(batch_size, len(x) - lo)])
        return np.concatenate(out)

    def logits(self, images: Any, invert: bool = False, crop: bool = False, batch_size: int = 256) -> np.ndarray:
        """Logits (N, K), float32 (see `to_training_images` for invert and crop)."""
        return self._logits_of_pixels(self.to_training_images(images, invert, crop), batch_size)

    def predict(self, images: Any, invert: bool = False, crop: bool = False, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, K), float32 (see `to_training_images` for invert and crop)."""
        return np.asarray(jax.nn.softmax(self.logits(images, invert, crop, batch_size), axis=-1))

    def predict_files(self, paths: Sequence[str], invert: bool = False, crop: bool = False,
                      batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, K) of image files (PNG, JPEG, ...), each brought to the training size."""
        if not len(paths):
            return np.zeros((0, len(self.class_names)), np.float32)
        x = np.concatenate([self.to_training_images(read_image(p), invert, crop) for p in paths])
        return np.asarray(jax.nn.softmax(self._logits_of_pixels(x, batch_size), axis=-1))
