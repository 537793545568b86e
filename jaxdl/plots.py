"""The pictures: training curves, confusion matrices, sample grids.

Matplotlib with the Agg backend (no screen needed); imports nothing from jaxdl.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _epoch_series(events: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    latest: dict[int, float] = {}  # a resumed run may log an epoch twice: the last one wins
    for e in events:
        if e.get("split") == split and key in e and "epoch" in e:
            latest[int(e["epoch"])] = float(np.mean(e[key]))  # many models: their mean
    epochs = sorted(latest)
    return epochs, [latest[i] for i in epochs]


def curves(metrics_jsonl: str, out_png: str, keys: tuple[str, ...] = ("loss", "accuracy")) -> None:
    """One panel per metric, train and test per epoch."""
    with open(metrics_jsonl) as f:
        events = [json.loads(line) for line in f if line.strip()]
    keys = tuple(k for k in keys if any(k in e for e in events))
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for split in ("train", "test"):
            x, y = _epoch_series(events, split, key)
            if x:
                ax.plot(x, y, marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, out_png)


def confusion_matrix(cm: np.ndarray, class_names: list[str], out_png: str) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * n + 2), max(4.5, 0.45 * n + 1.5)))
    ConfusionMatrixDisplay(cm, display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, include_values=n <= 20, xticks_rotation="vertical" if n > 10 else "horizontal")
    ax.set_title("confusion matrix (rows: true, columns: predicted)")
    fig.tight_layout()
    _save(fig, out_png)


def _save(fig, out_png: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    tmp = out_png + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_png)
