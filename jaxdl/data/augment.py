"""On-device image preprocessing: pure, jittable, vmapped with one key per example.

Train: resize -> random rotation (bilinear, zero fill) -> brightness jitter ->
contrast jitter -> grey to RGB -> normalise. Eval: resize -> grey to RGB ->
normalise. With zero rotation and zero jitter the train path equals the eval
path exactly. Rotation and jitter run before the channel copy, which gives the
same result as after it (the copies are equal) at a third of the cost.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
    image_size: int  # output height and width
    channels: int  # output channels (1 or 3); grey inputs are copied to 3
    mean: tuple[float, ...]  # per input channel, on [0, 1] pixels
    std: tuple[float, ...]
    max_rotation_deg: float = 10.0
    brightness: float = 0.2  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.2  # factor drawn from [1 - c, 1 + c]

    def eval(self, images_BHWC: jax.Array) -> jax.Array:
        """uint8 images -> normalised float32 at the model's size and channels."""
        x = _to_unit(images_BHWC)
        x = _resize(x, self.image_size)
        return self._finish(x)

    def train(self, images_BHWC: jax.Array, key: jax.Array) -> jax.Array:
        """Random per-example augmentation; `key` is split into one key per example."""
        x = _resize(_to_unit(images_BHWC), self.image_size)
        keys = jax.random.split(key, x.shape[0])
        x = jax.vmap(self._augment_one)(x, keys)
        return self._finish(x)

    def _augment_one(self, x_HWC: jax.Array, key: jax.Array) -> jax.Array:
        k_rot, k_bright, k_contrast = jax.random.split(key, 3)
        max_rad = math.radians(self.max_rotation_deg)
        angle = jax.random.uniform(k_rot, (), minval=-max_rad, maxval=max_rad)
        x_HWC = rotate(x_HWC, angle)
        b = jax.random.uniform(k_bright, (), minval=1 - self.brightness, maxval=1 + self.brightness)
        x_HWC = jnp.clip(x_HWC * b, 0.0, 1.0)
        c = jax.random.uniform(k_contrast, (), minval=1 - self.contrast, maxval=1 + self.contrast)
        grey_mean = _grey(x_HWC).mean()
        return jnp.clip(c * x_HWC + (1 - c) * grey_mean, 0.0, 1.0)

    def _finish(self, x_BHWC: jax.Array) -> jax.Array:
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        x_BHWC = (x_BHWC - mean) / std
        return to_channels(x_BHWC, self.channels)


def _to_unit(images_BHWC: jax.Array) -> jax.Array:
    return jnp.asarray(images_BHWC).astype(jnp.float32) / 255.0


def _resize(x_BHWC: jax.Array, size: int) -> jax.Array:
    B, H, W, C = x_BHWC.shape
    if (H, W) == (size, size):
        return x_BHWC
    return jax.image.resize(x_BHWC, (B, size, size, C), method="bilinear", antialias=True)


def _grey(x_HWC: jax.Array) -> jax.Array:
    if x_HWC.shape[-1] == 1:
        return x_HWC[..., 0]
    return x_HWC @ jnp.asarray(_LUMA, x_HWC.dtype)


def to_channels(x_BHWC: jax.Array, channels: int) -> jax.Array:
    """Grey -> RGB by copying the channel; RGB -> grey by luma; else unchanged."""
    have = x_BHWC.shape[-1]
    if have == channels:
        return x_BHWC
    if have == 1 and channels == 3:
        return jnp.broadcast_to(x_BHWC, x_BHWC.shape[:-1] + (3,))
    if have == 3 and channels == 1:
        return (x_BHWC @ jnp.asarray(_LUMA, x_BHWC.dtype))[..., None]
    raise ValueError(f"cannot turn {have}-channel images into {channels}-channel ones")


def rotate(x_HWC: jax.Array, angle: jax.Array) -> jax.Array:
    """Rotate about the image centre by `angle` radians (bilinear, zero outside the image)."""
    H, W, _ = x_HWC.shape
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(H, dtype=jnp.float32), jnp.arange(W, dtype=jnp.float32), indexing="ij")
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    # each output pixel reads the source pixel the inverse rotation maps it to
    src_y = cy + cos * (yy - cy) - sin * (xx - cx)
    src_x = cx + sin * (yy - cy) + cos * (xx - cx)
    sample = lambda channel_HW: map_coordinates(channel_HW, [src_y, src_x], order=1, mode="constant", cval=0.0)
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(x_HWC)
