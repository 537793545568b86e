"""Dataset specs: digits, folder:PATH (written here as PNGs), TFDS through mock data, and bad specs."""

import numpy as np
import pytest
from PIL import Image

from jaxdl.data import images
from jaxdl.data.batches import cycled_batches, epoch_batches, eval_batches
from jaxdl.data.images import load_images
from jaxdl.errors import UsageError


def write_folder(root, splits=("train", "test"), classes=("cat", "dog", "ant"), per_class=4, size=12, mode="RGB"):
    rng = np.random.default_rng(0)
    for split in splits:
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                arr = np.clip(rng.normal(40 + 80 * ci, 20, shape), 0, 255).astype(np.uint8)
                Image.fromarray(arr, mode).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_digits_fixed_stratified_split():
    a, b = load_images("digits"), load_images("digits")
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 360
    assert a.train.images.dtype == np.uint8 and a.train.images.shape[1:] == (8, 8, 1)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert np.bincount(a.test.labels).min() >= 35  # every class present in test
    assert a.train.images.max() == 255 and 0.1 < a.mean[0] < 0.5


def test_digits_from_the_cache_are_scikit_learns_split(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    made = images._digits_split()  # what scikit-learn makes
    first, second = load_images("digits"), load_images("digits")  # made and cached, then read from the cache
    cached = list(tmp_path.glob(f"jaxdl/digits-split-{images.DIGITS_SPLIT_FORMAT}-scikit-learn-*.npz"))
    assert len(cached) == 1
    for ds in (first, second):
        for name in ("train", "test"):
            np.testing.assert_array_equal(getattr(ds, name).images, made[name][0])
            np.testing.assert_array_equal(getattr(ds, name).labels, made[name][1])
            assert getattr(ds, name).labels.dtype == np.int32
        assert ds.mean == first.mean and ds.std == first.std
    monkeypatch.setattr(images, "_digits_split", lambda: pytest.fail("the cache was not used"))
    load_images("digits")
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with np.load(cached[0]) as z:  # a cache that is not the split (other labels) is made again
        np.savez(cached[0], **{**dict(z), "test_labels": np.full(360, 11, np.int32)})
    np.testing.assert_array_equal(load_images("digits").test.labels, made["test"][1])
    with np.load(cached[0]) as z:
        np.testing.assert_array_equal(z["test_labels"], made["test"][1])
    cached[0].write_bytes(b"not a zip")  # damaged
    np.testing.assert_array_equal(load_images("digits").train.images, made["train"][0])


def test_folder_rgb_with_classes_sorted_by_name(tmp_path):
    ds = load_images(f"folder:{write_folder(tmp_path)}")
    assert ds.class_names == ["ant", "cat", "dog"]
    assert ds.train.images.shape == (12, 12, 12, 3) and len(ds.test) == 12
    # class "ant" was written darkest-but-one (index 2 -> brightest); check labels follow names, not write order
    bright = [ds.train.images[ds.train.labels == k].mean() for k in range(3)]
    assert bright[0] > bright[2] > bright[1]


def test_folder_grey_resized_and_held_out_split(tmp_path):
    write_folder(tmp_path, splits=("train",), per_class=10, size=20, mode="L")
    ds = load_images(f"folder:{tmp_path}", image_size=16)
    assert ds.train.images.shape[1:] == (16, 16, 1)
    assert len(ds.train) == 24 and len(ds.test) == 6


@pytest.mark.parametrize("case,match", [
    ("missing", "no such directory"),
    ("no_train", "no train/ split"),
    ("no_classes", "no class folders"),
    ("empty_class", "holds no .png/.jpg"),
    ("bad_image", r"cannot read image .*broken\.png"),
    ("too_few_to_split", "too few images per class"),
])
def test_folder_bad_input(tmp_path, case, match):
    root = tmp_path / "data"
    if case == "no_train":
        (root / "other").mkdir(parents=True)
    elif case == "no_classes":
        (root / "train").mkdir(parents=True)
    elif case == "empty_class":
        write_folder(root)
        (root / "train" / "zebra").mkdir()
    elif case == "too_few_to_split":
        write_folder(root, splits=("train",), per_class=2)
    elif case == "bad_image":
        write_folder(root)
        (root / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match=match):
        load_images(f"folder:{root}")


@pytest.mark.parametrize("spec", ["no_such_dataset_xyz", "s3://bucket/x", "tfds:no_such_dataset_xyz", ""])
def test_unknown_specs(spec):
    with pytest.raises(UsageError, match="dataset"):
        load_images(spec)


def test_labels_out_of_range_are_refused():
    ds = load_images("digits")
    with pytest.raises(UsageError, match="label 9, outside 0..8"):
        ds.check_labels(9)
    ds.check_labels(10)


def test_tfds_mnist_through_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        ds = load_images("mnist")
    assert ds.train.images.shape == (40, 28, 28, 1) and ds.train.images.dtype == np.uint8
    assert ds.num_classes == 10 and len(ds.test) == 40


def test_epoch_batches_are_a_function_of_seed_and_step_and_each_epoch_a_new_order():
    data = {"x": np.arange(10), "y": np.arange(10) * 2}
    batches = epoch_batches(data, 3, seed=0)
    epoch = lambda ds, e: np.concatenate([ds[s]["x"] for s in range(3 * e, 3 * e + 3)])  # 3 full batches, 1 left out
    for e in range(3):
        x = epoch(batches, e)
        assert len(x) == len(set(x)) == 9 and set(x) <= set(range(10))
        np.testing.assert_array_equal(x, epoch(epoch_batches(data, 3, seed=0), e))  # the same on a fresh dataset
    assert not np.array_equal(epoch(batches, 0), epoch(batches, 1))
    assert not np.array_equal(epoch(batches, 0), epoch(epoch_batches(data, 3, seed=1), 0))
    np.testing.assert_array_equal(batches[4]["y"], batches[4]["x"] * 2)


def test_cycled_batches_run_through_successive_permutations():
    data = {"x": np.arange(6)}
    aligned = [cycled_batches(data, 3, seed=3)[s]["x"] for s in range(8)]  # a pass every 2 batches
    passes = [np.concatenate(aligned[2 * p:2 * p + 2]) for p in range(4)]
    assert all(sorted(p) == list(range(6)) for p in passes) and len({tuple(p) for p in passes}) > 1
    across = np.concatenate([cycled_batches(data, 4, seed=3)[s]["x"] for s in range(3)])  # 2 passes, batches straddling
    assert np.bincount(across).tolist() == [2] * 6


def test_eval_batches_cover_everything_once_with_a_mask():
    data = {"x": np.arange(10)}
    batches = list(eval_batches(data, 4))
    assert [len(b["x"]) for b in batches] == [4, 4, 4]
    seen = np.concatenate([b["x"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(seen, np.arange(10))
