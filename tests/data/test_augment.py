"""On-device augmentation: identity at zero strength, normalisation, channel copy, per-example draws."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.augment import ImagePreprocess, rotate
from jaxdl.data.images import channel_stats

MNIST = ((0.1307,), (0.3081,))


def _images(n=8, size=28, channels=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def test_zero_rotation_and_jitter_is_the_eval_path():
    pre = ImagePreprocess(48, 3, *MNIST, max_rotation_deg=0.0, brightness=0.0, contrast=0.0)
    x = _images()
    np.testing.assert_allclose(pre.train(x, jax.random.key(3)), pre.eval(x), atol=1e-6)


def test_eval_is_resize_then_normalise():
    pre = ImagePreprocess(28, 1, *MNIST)
    x = _images()
    np.testing.assert_allclose(pre.eval(x), (x / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    big = ImagePreprocess(56, 1, *MNIST).eval(x)
    assert big.shape == (8, 56, 56, 1)
    # bilinear 2x upsampling keeps the mean brightness up to border effects
    np.testing.assert_allclose(big.mean(), pre.eval(x).mean(), atol=0.05)


def test_normalised_data_has_zero_mean_unit_std():
    # MNIST-like: mostly dark background, bright strokes
    rng = np.random.default_rng(0)
    x = np.where(rng.random((500, 28, 28, 1)) < 0.15, rng.integers(128, 256, (500, 28, 28, 1)), 0).astype(np.uint8)
    mean, std = channel_stats(x)
    out = np.asarray(ImagePreprocess(28, 1, mean, std).eval(x))
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-4
    # and with the recipe's MNIST constants, data with those statistics normalises the same way
    y = (np.asarray(out) * 0.3081 + 0.1307)
    z = (y - 0.1307) / 0.3081
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-4


def test_grey_to_rgb_copies_the_channel():
    pre = ImagePreprocess(28, 3, *MNIST)
    out = np.asarray(pre.eval(_images()))
    assert out.shape == (8, 28, 28, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    aug = np.asarray(pre.train(_images(), jax.random.key(0)))
    np.testing.assert_array_equal(aug[..., 0], aug[..., 2])


def test_every_example_gets_its_own_transform():
    pre = ImagePreprocess(28, 1, *MNIST)
    same = np.repeat(_images(1), 6, axis=0)  # six copies of one image
    out = np.asarray(pre.train(same, jax.random.key(0)))
    diffs = [np.abs(out[i] - out[j]).max() for i in range(6) for j in range(i + 1, 6)]
    assert min(diffs) > 1e-3
    # the same key gives the same batch; another key another batch
    np.testing.assert_array_equal(out, pre.train(same, jax.random.key(0)))
    assert not np.allclose(out, pre.train(same, jax.random.key(1)))


def test_rotation_quarter_turn_matches_rot90_and_stays_within_range():
    x = jnp.asarray(np.random.default_rng(0).random((9, 9, 2)), jnp.float32)
    turned = rotate(x, jnp.float32(np.pi / 2))
    expected = np.rot90(np.asarray(x), k=1, axes=(0, 1))  # counter-clockwise in array coordinates
    if not np.allclose(turned, expected, atol=1e-5):
        expected = np.rot90(np.asarray(x), k=-1, axes=(0, 1))
    np.testing.assert_allclose(turned, expected, atol=1e-5)
    np.testing.assert_allclose(rotate(x, jnp.float32(0.0)), x, atol=0)


def test_jitter_stays_within_bounds():
    pre = ImagePreprocess(28, 1, (0.0,), (1.0,), max_rotation_deg=0.0, brightness=0.2, contrast=0.2)
    out = np.asarray(pre.train(_images(64), jax.random.key(0)))
    assert out.min() >= 0.0 and out.max() <= 1.0
    ratio = out.mean(axis=(1, 2, 3)) / (_images(64) / 255.0).mean(axis=(1, 2, 3))
    assert ratio.min() < 0.97 and ratio.max() > 1.03 and ratio.max() < 1.25 and ratio.min() > 0.75


def test_training_rotates_each_image_by_at_most_the_given_angle():
    # one bright pixel 10 px right of the centre of a 41x41 image: a rotation by t moves it along a circle
    x = np.zeros((64, 41, 41, 1), np.uint8)
    x[:, 20, 30] = 255
    pre = ImagePreprocess(41, 1, (0.0,), (1.0,), max_rotation_deg=10.0, brightness=0.0, contrast=0.0)
    out = np.asarray(pre.train(x, jax.random.key(0)))[..., 0]
    ys, xs = np.indices((41, 41))
    mass = out.sum(axis=(1, 2))
    cy, cx = (out * ys).sum(axis=(1, 2)) / mass - 20, (out * xs).sum(axis=(1, 2)) / mass - 20
    angles = np.degrees(np.arctan2(cy, cx))
    assert np.abs(angles).max() <= 10.5  # within +-10 degrees (bilinear blur moves the centroid a little)
    assert angles.std() > 3 and angles.min() < -5 and angles.max() > 5  # and really spread over the range
