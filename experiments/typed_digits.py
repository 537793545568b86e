"""Write a `folder:` dataset of typed digits: the fonts matplotlib ships, light on dark, each glyph
rotated, scaled and shifted at random and framed like scikit-learn's digits (the ink fills the
square). Train and test use different fonts, so the test measures reading a typeface never seen.

    python experiments/typed_digits.py --out data/typed_digits
    python experiments/cnn.py --dataset folder:data/typed_digits --init-from runs/cnn     # runs/cnn-typed_digits

The example of fine-tuning in docs/using-trained-models.md: MyNet trained on handwritten digits,
then on these.
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from jaxdl import cli  # noqa: E402
from jaxdl.cli import field  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402

TRAIN_FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique", "DejaVuSansMono",
               "DejaVuSansMono-Bold", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic")
TEST_FONTS = ("STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta", "cmr10", "cmss10", "cmtt10")


@dataclasses.dataclass
class Config:
    out: str = field("data/typed_digits", "the folder to write (PATH/train/<digit>/*.png, PATH/test/<digit>/*.png)")
    per_font: int = field(4, "images of each digit in each font")
    size: int = field(32, "image height and width in pixels")
    seed: int = field(0, "seeds the rotations, scales and shifts")

    def __post_init__(self) -> None:
        if self.per_font < 1 or self.size < 8:
            raise UsageError(f"--per-font must be >= 1 and --size >= 8, got {self.per_font} and {self.size}")
        if self.per_font > 10_000 or self.size > 1024:
            raise UsageError(f"--per-font must be at most 10,000 and --size at most 1,024 pixels, got "
                             f"{self.per_font:,} and {self.size:,}")
        if not 0 <= self.seed < 2 ** 32:
            raise UsageError(f"--seed must be in 0..{2 ** 32 - 1} (NumPy refuses negative seeds), got {self.seed}")
        if not self.out:
            raise UsageError("--out is empty: give the folder to write")
        cli.check_path("--out", self.out)


def glyph(digit: str, font_path: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One digit, white on black, turned by up to 12 degrees, its ink scaled to fill 80-100% of the
    square and shifted by up to a tenth of it."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("L", (4 * size, 4 * size), 0)
    ImageDraw.Draw(canvas).text((2 * size, 2 * size), digit, fill=255, anchor="mm",
                                font=ImageFont.truetype(font_path, 3 * size))
    canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR)
    box = canvas.getbbox()
    ink = canvas.crop(box)
    side = int(size * rng.uniform(0.8, 1.0))
    w, h = ink.size
    scale = side / max(w, h)
    ink = ink.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    out = Image.new("L", (size, size), 0)
    shift = rng.integers(-size // 10, size // 10 + 1, 2)
    out.paste(ink, ((size - ink.size[0]) // 2 + int(shift[0]), (size - ink.size[1]) // 2 + int(shift[1])))
    return np.asarray(out)


def main(argv=None) -> str:
    cfg = cli.parse(Config, argv, __doc__)
    import matplotlib
    from PIL import Image

    fonts = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    if os.path.exists(cfg.out) and not os.path.isdir(cfg.out):
        raise UsageError(f"--out {cfg.out} is a file, not a folder: pick a new folder")
    if os.path.exists(cfg.out) and os.listdir(cfg.out):
        raise UsageError(f"--out {cfg.out} exists and is not empty: pick a new folder")
    rng = np.random.default_rng(cfg.seed)
    for split, names in (("train", TRAIN_FONTS), ("test", TEST_FONTS)):
        for digit in "0123456789":
            folder = os.path.join(cfg.out, split, digit)
            os.makedirs(folder, exist_ok=True)
            for name in names:
                for i in range(cfg.per_font):
                    image = glyph(digit, os.path.join(fonts, f"{name}.ttf"), cfg.size, rng)
                    Image.fromarray(image).save(os.path.join(folder, f"{name}_{i}.png"))
    n = {s: 10 * len(f) * cfg.per_font for s, f in (("train", TRAIN_FONTS), ("test", TEST_FONTS))}
    print(f"{cfg.out}: {n['train']} train images ({len(TRAIN_FONTS)} fonts), {n['test']} test images "
          f"({len(TEST_FONTS)} other fonts), {cfg.size}x{cfg.size}")
    return cfg.out


if __name__ == "__main__":
    cli.run(main)
