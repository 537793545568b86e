"""experiments/typed_digits.py: a folder: dataset of typed digits, train and test fonts apart."""

import numpy as np

from experiments import typed_digits
from jaxdl.data.images import load_images
from tests.experiments.workdir import exits_2


def test_writes_a_folder_dataset_with_unseen_test_fonts(tmp_path, capsys):
    out = typed_digits.main(["--out", str(tmp_path / "typed"), "--per-font", "1", "--size", "16"])
    data = load_images(f"folder:{out}")
    assert data.class_names == [str(d) for d in range(10)] and data.channels == 1
    assert len(data.train) == 10 * len(typed_digits.TRAIN_FONTS) and len(data.test) == 10 * len(typed_digits.TEST_FONTS)
    assert not set(typed_digits.TRAIN_FONTS) & set(typed_digits.TEST_FONTS)
    assert data.train.images.shape[1:] == (16, 16, 1) and data.train.images.max() == 255
    ink = data.train.images[..., 0] > 128  # light on dark, the ink reaching near the frame
    assert ink.mean() < 0.5 and np.all(ink.any(axis=(1, 2)))
    err = exits_2(typed_digits.main, ["--out", str(out)], capsys)
    assert "not empty" in err
