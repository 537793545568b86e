"""Image classification datasets from a spec string, as uint8 numpy arrays.

Specs (the same everywhere, see DESIGN.md):
  digits          scikit-learn's bundled 8x8 digits, fixed stratified 80/20 split (offline)
  folder:PATH     PATH/<split>/<class>/*.png|jpg, classes sorted by name
  tfds:NAME, NAME a TFDS dataset with `image` and `label` features (mnist, cifar10, ...)
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from jaxdl.errors import UsageError


@dataclasses.dataclass
class ImageSplit:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int32 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass
class ImageDataset:
    name: str
    train: ImageSplit
    test: ImageSplit
    class_names: list[str]
    mean: tuple[float, ...]  # per channel, of train pixels scaled to [0, 1]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.train.images.shape[-1]

    def check_labels(self, num_classes: int) -> None:
        for split_name, split in (("train", self.train), ("test", self.test)):
            bad = (split.labels < 0) | (split.labels >= num_classes)
            if bad.any():
                i = int(np.argmax(bad))
                raise UsageError(
                    f"{self.name} {split_name} example {i} has label {int(split.labels[i])}, outside "
                    f"0..{num_classes - 1}: raise --num-classes or fix the data"
                )


def channel_stats(images_NHWC: np.ndarray, max_images: int = 20_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels scaled to [0, 1] (over at most `max_images`, evenly spaced)."""
    step = max(1, len(images_NHWC) // max_images)
    x = images_NHWC[::step].astype(np.float64) / 255.0
    mean = x.mean(axis=(0, 1, 2))
    std = x.std(axis=(0, 1, 2))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-6)) for s in std)


def _dataset(name: str, train: ImageSplit, test: ImageSplit, class_names: list[str]) -> ImageDataset:
    mean, std = channel_stats(train.images)
    return ImageDataset(name, train, test, class_names, mean, std)


DIGITS_SPLIT = {"train": 1437, "test": 360}  # images in each split
DIGITS_SPLIT_FORMAT = 1  # bumped whenever _digits_split changes what it makes: older cached splits are not read


def load_digits() -> ImageDataset:
    """scikit-learn's 1,797 digits as uint8 0..255, split 80/20 stratified with seed 0."""
    split = _cached_digits_split()
    if split is None:
        split = _digits_split()
        _cache_digits_split(split)
    (xtr, ytr), (xte, yte) = split["train"], split["test"]
    return _dataset("digits", ImageSplit(xtr, ytr), ImageSplit(xte, yte), [str(i) for i in range(10)])


def _digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255
    labels = d.target.astype(np.int32)
    xtr, xte, ytr, yte = train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=0)
    return {"train": (xtr, ytr), "test": (xte, yte)}


def _digits_cache_file() -> str:
    """The split as scikit-learn made it, kept per scikit-learn version in jaxdl's cache folder: a
    later process reads it in milliseconds instead of importing scikit-learn (~1 s)."""
    from importlib import metadata

    from jaxdl.runtime import cache_dir

    name = f"digits-split-{DIGITS_SPLIT_FORMAT}-scikit-learn-{metadata.version('scikit-learn')}.npz"
    return os.path.join(cache_dir(), name)


def _cached_digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The cached split, or None when there is none or it is not what _digits_split makes."""
    try:
        with np.load(_digits_cache_file()) as z:
            split = {name: (z[f"{name}_images"], z[f"{name}_labels"]) for name in DIGITS_SPLIT}
    except Exception:  # noqa: BLE001 - missing, unreadable or damaged: made again
        return None
    for name, n in DIGITS_SPLIT.items():
        images, labels = split[name]
        if images.shape != (n, 8, 8, 1) or images.dtype != np.uint8 or labels.shape != (n,) or \
                labels.dtype != np.int32 or not np.isin(labels, np.arange(10)).all():
            return None
    return split


def _cache_digits_split(split: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    path = _digits_cache_file()
    arrays = {f"{name}_{part}": a for name, pair in split.items() for part, a in zip(("images", "labels"), pair)}
    partial = f"{path}.{os.getpid()}.npz"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(partial, **arrays)
        os.replace(partial, path)  # whole or not at all, whichever process writes last
    except OSError:  # a read-only home or a full disk: made again next time
        try:
            os.remove(partial)
        except OSError:
            pass


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_TEST_SPLIT_NAMES = ("test", "val", "validation")


def _read_image(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:  # PIL raises many types for bad files
        raise UsageError(f"cannot read image {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                         "remove or replace the file") from None


def _class_files(split_dir: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise UsageError(f"{split_dir} has no class folders: expected {split_dir}/<class>/*.png|jpg")
    files = {}
    for c in classes:
        imgs = sorted(p for p in c.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not imgs:
            raise UsageError(f"class folder {c} holds no .png/.jpg images: add images or remove the folder")
        files[c.name] = imgs
    return files


def _read_split(files: dict[str, list[Path]], class_names: list[str], size: int | None) -> ImageSplit:
    paths = [p for c in files for p in files[c]]
    labels = np.array([class_names.index(c) for c in files for _ in files[c]], np.int32)
    with ThreadPoolExecutor(8) as pool:
        images = list(pool.map(lambda p: _read_image(p, size), paths))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise UsageError(f"images under {paths[0].parent.parent} differ in size {sorted(shapes)[:3]}: "
                         "pass --image-size so they are resized on load")
    return ImageSplit(np.stack(images), labels)


def load_folder(root: str, image_size: int | None = None) -> ImageDataset:
    """`root/<split>/<class>/*`: a `train` split, and `test` (or `val`/`validation`) if present.

    Without a test split, a fixed stratified 20% of train is held out. Images are
    resized to `image_size` on load when they differ; grey folders stay 1-channel.
    """
    base = Path(root)
    if not base.is_dir():
        raise UsageError(f"folder:{root}: no such directory")
    if not (base / "train").is_dir():
        raise UsageError(f"folder:{root} has no train/ split: expected {root}/train/<class>/*.png|jpg")
    train_files = _class_files(base / "train")
    class_names = list(train_files)
    test_dir = next((base / n for n in _TEST_SPLIT_NAMES if (base / n).is_dir()), None)
    train = _read_split(train_files, class_names, image_size)
    if test_dir is not None:
        test_files = _class_files(test_dir)
        unknown = sorted(set(test_files) - set(class_names))
        if unknown:
            raise UsageError(f"{test_dir} has classes {unknown} that train/ lacks: make the class folders match")
        test = _read_split(test_files, class_names, image_size)
    else:
        from sklearn.model_selection import train_test_split

        try:
            idx_tr, idx_te = train_test_split(np.arange(len(train)), test_size=0.2, stratify=train.labels,
                                              random_state=0)
        except ValueError:
            raise UsageError(f"folder:{root} has too few images per class to hold out 20% for testing: "
                             f"add {root}/test/<class>/ or more images") from None
        train, test = (ImageSplit(train.images[i], train.labels[i]) for i in (idx_tr, idx_te))
    if all((s.images[..., 0] == s.images[..., 1]).all() and (s.images[..., 0] == s.images[..., 2]).all()
           for s in (train, test)):
        train, test = (ImageSplit(s.images[..., :1], s.labels) for s in (train, test))
    return _dataset(f"folder:{root}", train, test, class_names)


def load_tfds(name: str, data_dir: str | None = None) -> ImageDataset:
    """A TFDS image dataset through `tfds.data_source` (random access; TensorFlow not needed to read)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise UsageError(f"unknown --dataset {name!r} ({type(e).__name__}): use digits, folder:PATH or a "
                         "TFDS name such as mnist, fashion_mnist, cifar10") from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise UsageError(f"TFDS dataset {name!r} has no image/label features: pick an image classification dataset")
    known = builder.info.splits  # empty until the dataset is prepared
    test_split = "validation" if known and "test" not in known and "validation" in known else "test"
    splits = {}
    for split in ("train", test_split):
        try:
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=True)
            images, labels = _read_source(source, f"{name} {split}")
        except UsageError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise UsageError(
                f"could not load TFDS {name!r} split {split!r} ({type(e).__name__}: {first}); it needs internet "
                "on first use or prepared data under --data-dir, and preparing some datasets needs TensorFlow "
                "(pip install 'jaxdl[tfds-prepare]')") from None
        splits[split] = ImageSplit(images, labels)
    class_names = list(features["label"].names)
    return _dataset(name, splits["train"], splits[test_split], class_names)


def _read_source(source, what: str) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    images, labels = [], []
    for i in tqdm(range(len(source)), desc=f"reading {what}", unit="img", leave=False, mininterval=1.0):
        ex = source[i]
        images.append(np.asarray(ex["image"], np.uint8))
        labels.append(int(ex["label"]))
    imgs = np.stack(images)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    return imgs, np.asarray(labels, np.int32)


def check_spec(spec: str, data_dir: str = "") -> None:
    """Refuse an image dataset spec (or TFDS --data-dir) that can name nothing, before anything loads."""
    from jaxdl.cli import check_path

    _, colon, path = spec.partition(":")
    if not spec or (colon and not path):
        raise UsageError(f"--dataset {spec!r} names no images: use digits, mnist, tfds:NAME or folder:PATH")
    check_path("--dataset", path if colon else spec)  # a TFDS name becomes a directory name
    check_path("--data-dir", data_dir)


def load_images(spec: str, data_dir: str | None = None, image_size: int | None = None) -> ImageDataset:
    """Resolve a dataset spec (see module docstring); bad specs raise UsageError."""
    if spec == "digits":
        return load_digits()
    if spec.startswith("folder:"):
        return load_folder(spec[len("folder:"):], image_size)
    if spec.startswith("tfds:"):
        return load_tfds(spec[len("tfds:"):], data_dir)
    if spec and ":" not in spec and "/" not in spec:
        return load_tfds(spec, data_dir)
    raise UsageError(f"unknown dataset spec {spec!r}: use digits, folder:PATH, tfds:NAME or a TFDS name such as mnist")


def resized(data: ImageDataset, size: int) -> ImageDataset:
    """The dataset with every image resized to size x size (bilinear, antialiased), still uint8."""
    import jax
    import jax.numpy as jnp

    def resize(images: np.ndarray) -> np.ndarray:
        N, H, W, C = images.shape
        if (H, W) == (size, size):
            return images
        out = [jax.image.resize(jnp.asarray(images[i:i + 4096], jnp.float32), (len(images[i:i + 4096]), size, size, C),
                                "bilinear", antialias=True) for i in range(0, N, 4096)]
        return np.asarray(jnp.clip(jnp.round(jnp.concatenate(out)), 0, 255)).astype(np.uint8)

    train, test = (ImageSplit(resize(s.images), s.labels) for s in (data.train, data.test))
    return _dataset(data.name, train, test, data.class_names)
