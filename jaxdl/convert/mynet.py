"""The seed's PyTorch `MY_NET` <-> jaxdl's `MyNet`.

MY_NET's state dict: `conv1`, `conv2`, `conv3` (weights OIHW), `fc1`, `fc2` (weights (out, in)),
each with a bias. MyNet's kernels are HWIO and (in, out). torch flattens the last feature map in
(C, H, W) order, MyNet in (H, W, C): the rows of fc1's kernel are permuted accordingly. The input
channels, image size (4 x the last map's side) and class count are read off the shapes.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from jaxdl.convert import state_dict
from jaxdl.convert.workdir import Converted
from jaxdl.errors import UsageError

CONVS = ("conv1", "conv2", "conv3")
DENSES = ("fc1", "fc2")
WIDTHS = {"conv1": 32, "conv2": 64, "conv3": 128, "fc1": 512}


def fc1_rows_chw_to_hwc(channels: int, side: int) -> np.ndarray:
    """perm with hwc_index -> chw_index: row i of MyNet's fc1 kernel is row perm[i] of torch's weight.T."""
    return np.arange(channels * side * side).reshape(channels, side, side).transpose(1, 2, 0).reshape(-1)


def expected_shapes(in_channels: int = 3, image_size: int = 48, num_classes: int = 10) -> dict[str, tuple]:
    side = image_size // 4
    shapes = {"conv1.weight": (32, in_channels, 3, 3), "conv2.weight": (64, 32, 3, 3),
              "conv3.weight": (128, 64, 3, 3), "fc1.weight": (512, 128 * side * side),
              "fc2.weight": (num_classes, 512)}
    shapes.update({f"{name}.bias": (WIDTHS.get(name, num_classes),) for name in (*CONVS, *DENSES)})
    return shapes


def sizes_of(tensors: Mapping[str, np.ndarray]) -> tuple[int, int, int]:
    """(in_channels, image_size, num_classes) read off the shapes (defaults where a key is missing)."""
    shape = lambda k, i, default: tensors[k].shape[i] if k in tensors and tensors[k].ndim > i else default
    in_channels = shape("conv1.weight", 1, 3)
    side = math.isqrt(max(shape("fc1.weight", 1, 128 * 144) // 128, 1))
    return in_channels, 4 * side, shape("fc2.weight", 0, 10)


def params_from_state_dict(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """MyNet params ({"params": ...}, float32 numpy) with the weights of a MY_NET state dict."""
    t = lambda k: np.asarray(tensors[k], np.float32)
    out: dict[str, Any] = {}
    for name in CONVS:
        out[name] = {"kernel": np.ascontiguousarray(t(f"{name}.weight").transpose(2, 3, 1, 0)), "bias": t(f"{name}.bias")}
    for name in DENSES:
        out[name] = {"kernel": np.ascontiguousarray(t(f"{name}.weight").T), "bias": t(f"{name}.bias")}
    side = math.isqrt(out["fc1"]["kernel"].shape[0] // 128)
    out["fc1"]["kernel"] = np.ascontiguousarray(out["fc1"]["kernel"][fc1_rows_chw_to_hwc(128, side)])
    return {"params": out}


def state_dict_from_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The MY_NET state dict (float32 numpy, torch's names and layouts) of MyNet params."""
    p = params.get("params", params)
    arr = lambda x: np.asarray(x, np.float32)
    out: dict[str, np.ndarray] = {}
    for name in CONVS:
        out[f"{name}.weight"] = np.ascontiguousarray(arr(p[name]["kernel"]).transpose(3, 2, 0, 1))  # HWIO -> OIHW
    fc1 = arr(p["fc1"]["kernel"])
    unpermuted = np.empty_like(fc1)
    unpermuted[fc1_rows_chw_to_hwc(128, math.isqrt(fc1.shape[0] // 128))] = fc1
    out["fc1.weight"] = np.ascontiguousarray(unpermuted.T)
    out["fc2.weight"] = np.ascontiguousarray(arr(p["fc2"]["kernel"]).T)
    for name in (*CONVS, *DENSES):
        out[f"{name}.bias"] = np.array(arr(p[name]["bias"]))
    return out


def _floats(meta: dict, key: str, channels: int, src: str) -> tuple[float, ...]:
    value = meta.get(key)
    if value is None:
        raise UsageError(f"{src}: give --{key} (the Normalize({key}=...) of the transform the weights were trained "
                         f"with), or put \"{key}\" in {os.path.splitext(src)[0]}.json")
    values = (value,) if isinstance(value, (int, float)) else tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(values) not in (1, channels) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise UsageError(f"{key} must be 1 or {channels} finite numbers, got {value!r}")
    if key == "std" and min(values) <= 0:
        raise UsageError(f"std must be positive, got {value!r}")
    return tuple(float(v) for v in values)


def convert_in(kind: str, src: str, given: Mapping[str, Any]) -> Converted:
    """A MY_NET state dict (and its classes and normalisation) -> the workdir contents of a classifier."""
    from jaxdl.data.augment import ImagePreprocess
    from jaxdl.models.cnn import MyNet
    from jaxdl.tasks.run_info import classifier_info

    tensors = state_dict.read(src)
    in_channels, image_size, num_classes = sizes_of(tensors)
    state_dict.check(tensors, expected_shapes(in_channels, image_size, num_classes), src, "MY_NET")
    meta = state_dict.meta_beside(src, given, "classes, mean, std, data_size, data_channels")
    classes = meta.get("classes") or [str(i) for i in range(num_classes)]
    if not isinstance(classes, (list, tuple)) or len(classes) != num_classes or len(set(map(str, classes))) != num_classes:
        raise UsageError(f"{src} has {num_classes} classes (fc2): give {num_classes} distinct class names, got {classes!r}")
    mean, std = (_floats(meta, key, in_channels, src) for key in ("mean", "std"))
    data_size = meta.get("data_size", image_size)
    data_size = [data_size] * 2 if isinstance(data_size, int) else data_size
    data_channels = meta.get("data_channels", in_channels)
    if not (isinstance(data_size, list) and len(data_size) == 2 and all(
            isinstance(s, int) and 1 <= s <= 4096 for s in data_size)) or data_channels not in (1, 3):
        raise UsageError(f"data_size must be a side in pixels (1..4096, or [height, width]) and data_channels 1 or "
                         f"3, got {meta.get('data_size')!r}, {data_channels!r}")
    if len(mean) != len(std) or len(mean) not in (1, data_channels, in_channels):
        raise UsageError(f"mean and std need as many values as the images' channels, got {len(mean)} and {len(std)}")
    model = MyNet(num_classes=num_classes, image_size=image_size, in_channels=in_channels)
    params = params_from_state_dict(tensors)
    preprocess = ImagePreprocess(image_size, in_channels, mean, std)
    info = classifier_info(model, params, preprocess, f"converted:{os.path.basename(src)}", [str(c) for c in classes],
                           (*data_size, data_channels))
    return Converted(info, params)


def export(trained) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state dict, what goes to FILE.json) of a trained MyNet, for the seed's MY_NET; FILE.json is
    what `convert_in` reads beside the weights, so the round trip needs no flags."""
    fields = trained.info["model"]["fields"]
    if fields.get("pool", "max") != "max":
        raise UsageError(f"{trained.workdir} pools by {fields['pool']!r}; the seed's MY_NET max-pools, so its "
                         "weights would compute something else there")
    if fields.get("norm", "none") != "none":
        raise UsageError(f"{trained.workdir} has batch norm (--norm {fields['norm']}); the seed's MY_NET has none, "
                         "so its weights would compute something else there")
    c = trained.info["classifier"]
    if c["flatten"]:
        raise UsageError(f"{trained.workdir} is an MLP on flattened images, not a MyNet")
    meta = {"classes": c["class_names"], "mean": c["mean"], "std": c["std"], "data_size": c["data_size"],
            "data_channels": c["data_channels"]}
    return state_dict_from_params(trained.params), meta
