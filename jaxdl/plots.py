"""The pictures: training curves, confusion matrices, sample grids.

Matplotlib with the Agg backend (no screen needed), imported on the first picture (it takes a
large part of a second, which `jaxdl` commands that draw nothing need not pay); of jaxdl it imports
only `runtime.is_primary`: in a multi-process run, process 0 alone draws. Each saved picture's path
goes to the callables in `SAVED` (the run's TensorBoard log, jaxdl/train/tensorboard.py).
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from jaxdl.runtime import is_primary

SAVED: list = []  # callables given each picture's path once it is saved (the TensorBoard log adds it)


@functools.cache
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def _max_n_locator(**kw):
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(**kw)


def _epoch_series(events: list[dict], split: str, key: str, x_key: str = "epoch") -> tuple[list[int], list[float]]:
    latest: dict[int, float] = {}  # a resumed run may log an epoch twice: the last one wins
    for e in events:
        if e.get("split") == split and key in e and x_key in e:
            latest[int(e[x_key])] = float(np.mean(e[key]))  # many models: their mean
    epochs = sorted(latest)
    return epochs, [latest[i] for i in epochs]


def curves(metrics_jsonl: str, out_png: str, keys: tuple[str, ...] = ("loss", "accuracy")) -> None:
    """One panel per metric, train and test per epoch (per step for runs counted in steps)."""
    with open(metrics_jsonl) as f:
        events = [json.loads(line) for line in f if line.strip()]
    x_key = "epoch" if any("epoch" in e for e in events) else "step"
    keys = tuple(k for k in keys if any(k in e for e in events))
    if not keys:
        return
    fig, axes = _pyplot().subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for split in ("train", "test"):
            x, y = _epoch_series(events, split, key, x_key)
            if x:
                ax.plot(x, y, marker="o", label=split)
        ax.set_xlabel(x_key)
        ax.xaxis.set_major_locator(_max_n_locator(integer=True))
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, out_png)


def confusion_matrix(cm: np.ndarray, class_names: list[str], out_png: str) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(class_names)
    fig, ax = _pyplot().subplots(figsize=(max(5, 0.45 * n + 2), max(4.5, 0.45 * n + 1.5)))
    ConfusionMatrixDisplay(cm, display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, include_values=n <= 20, xticks_rotation="vertical" if n > 10 else "horizontal")
    ax.set_title("confusion matrix (rows: true, columns: predicted)")
    fig.tight_layout()
    _save(fig, out_png)


def decision_boundary(predict, x_N2: np.ndarray, y_N: np.ndarray, out_png: str, title: str = "") -> None:
    """P(class 1) over the plane around 2-D points (`predict`: (M, 2) -> (M,) probabilities)."""
    lo, hi = x_N2.min(0) - 0.5, x_N2.max(0) + 0.5
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    p = np.asarray(predict(np.stack([g0.ravel(), g1.ravel()], 1).astype(np.float32))).reshape(g0.shape)
    fig, ax = _pyplot().subplots(figsize=(4.5, 4))
    im = ax.contourf(g0, g1, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
    ax.contour(g0, g1, p, levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(x_N2[:, 0], x_N2[:, 1], c=y_N, cmap="RdBu_r", edgecolors="k", s=120, vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="P(class 1)")
    ax.set_title(title or "decision boundary (P = 0.5 in black)")
    fig.tight_layout()
    _save(fig, out_png)


def function_fit(x: np.ndarray, target: np.ndarray, fitted: np.ndarray, out_png: str, title: str = "") -> None:
    """A fitted 1-D function against its target."""
    fig, ax = _pyplot().subplots(figsize=(6, 3.5))
    ax.plot(x, target, "k--", label="target")
    ax.plot(x, fitted, label="model")
    ax.set_xlabel("x")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, out_png)


def compare_curves(runs: dict[str, str], out_png: str, key: str = "loss", split: str = "train",
                   log: bool = True) -> None:
    """`split`'s `key` per epoch of several runs (name -> metrics.jsonl), on one (log-scale) axis."""
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    for name, path in runs.items():
        with open(path) as f:
            events = [json.loads(line) for line in f if line.strip()]
        ax.plot(*_epoch_series(events, split, key), marker=".", label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} {key}")
    ax.xaxis.set_major_locator(_max_n_locator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, out_png)


def sample_grid(images_PNHWC: np.ndarray, row_titles: list[str], out_png: str, max_columns: int = 16) -> None:
    """Generated images in [0, 1], one row per prompt (titled with it), at most `max_columns` per row."""
    P, N = images_PNHWC.shape[:2]
    cols = min(N, max_columns)
    label_in = 0.07 * max(len(t) for t in row_titles) + 0.2  # room for the prompts, in inches
    width = 0.8 * cols + label_in
    fig, axes = _pyplot().subplots(P, cols, figsize=(width, 0.8 * P + 0.3), squeeze=False)
    for r in range(P):
        for c in range(cols):
            ax = axes[r, c]
            img = images_PNHWC[r, c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(row_titles[r], rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=label_in / width, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
    _save(fig, out_png)


def accuracy_vs_lag(accuracy: dict[str, list[float]], lags: list[int], out_png: str, solved: float | None = None,
                    chance: float | None = None) -> None:
    """Test accuracy against the lag, one line per model (name -> one accuracy per lag), lags on a log axis."""
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    for name, values in accuracy.items():
        ax.plot(lags, values, marker="o", label=name)
    if solved is not None:
        ax.axhline(solved, color="k", linestyle=":", linewidth=1, label=f"solved ({solved:.0%})")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.1%})")
    if len(lags) > 1 and max(lags) / min(lags) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(lags, [str(lag) for lag in lags])
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("lag (steps between the symbol and the answer)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, out_png)


def gradient_vs_distance(norms: dict[str, dict[str, list[float]]], out_png: str, mark: int | None = None) -> None:
    """||d loss / d h_{T-1-k}|| against k, on a log y-axis: one colour per model (name -> {"init":
    norms, "trained": norms}, index k = k steps back), dashed at initialisation, solid after training."""
    fig, ax = _pyplot().subplots(figsize=(6.5, 4))
    for i, (name, curves) in enumerate(norms.items()):
        for when, style in (("init", "--"), ("trained", "-")):
            if when in curves:
                y = np.asarray(curves[when], np.float64)
                ax.plot(np.arange(len(y)), np.where(y > 0, y, np.nan), style, color=f"C{i}", label=f"{name}, {when}")
    if mark is not None:
        ax.axvline(mark, color="k", linestyle=":", linewidth=1, label=f"the symbol ({mark} back)")
    ax.set_yscale("log")
    ax.set_xlabel("k: steps back from the last step")
    ax.set_ylabel("mean ||d loss / d h_(T-1-k)||")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    _save(fig, out_png)


def _save(fig, out_png: str) -> None:
    if not is_primary():
        _pyplot().close(fig)
        return
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    tmp = out_png + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    _pyplot().close(fig)
    os.replace(tmp, out_png)
    for listener in SAVED:
        listener(out_png)
