"""PyTorch reference models, for parity tests and speed comparisons only.

torch is never a runtime dependency of jaxdl: this module is imported by
`benchmarks/` scripts and by tests that `pytest.importorskip("torch")` first.

`MY_NET` is the seed's PyTorch CNN (NCHW); `mynet_params_from_torch` and
`mynet_params_to_torch` move its weights to and from jaxdl's Flax `MyNet`
(NHWC), so the two can be compared output for output and step for step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_CONVS = ("conv1", "conv2", "conv3")
_DENSES = ("fc1", "fc2")


class MY_NET(nn.Module):
    """conv 3->32, ReLU; conv 32->64, ReLU, pool; conv 64->128, ReLU, pool; dropout, fc 512, ReLU, dropout, fc."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 48, pool: str = "max"):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"MY_NET image_size must be a multiple of 4, got {image_size}")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.dropout = nn.Dropout(0.5)
        self.fc1 = nn.Linear(128 * (image_size // 4) ** 2, 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x_BCHW))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3(x)))
        x = self.dropout(torch.flatten(x, 1))  # (C, H, W) order
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


def _fc1_rows_chw_to_hwc(channels: int, side: int) -> np.ndarray:
    """perm with hwc_index -> chw_index: row i of the Flax kernel is row perm[i] of torch's weight.T."""
    return np.arange(channels * side * side).reshape(channels, side, side).transpose(1, 2, 0).reshape(-1)


def mynet_params_from_torch(module: MY_NET) -> dict[str, Any]:
    """Flax params for jaxdl's MyNet with the same weights as `module` (float32 numpy arrays)."""
    t = lambda p: p.detach().cpu().numpy().astype(np.float32)
    out: dict[str, Any] = {}
    for name in _CONVS:
        conv = getattr(module, name)
        out[name] = {"kernel": np.ascontiguousarray(t(conv.weight).transpose(2, 3, 1, 0)),  # OIHW -> HWIO
                     "bias": t(conv.bias)}
    for name in _DENSES:
        fc = getattr(module, name)
        out[name] = {"kernel": np.ascontiguousarray(t(fc.weight).T), "bias": t(fc.bias)}  # (out, in) -> (in, out)
    perm = _fc1_rows_chw_to_hwc(module.conv3.out_channels, module.image_size // 4)
    out["fc1"]["kernel"] = np.ascontiguousarray(out["fc1"]["kernel"][perm])
    return {"params": out}


def mynet_params_to_torch(params: dict[str, Any], module: MY_NET) -> MY_NET:
    """Load Flax MyNet params into `module` in place (the inverse of `mynet_params_from_torch`); returns it."""
    p = params["params"]
    arr = lambda x: np.asarray(x, dtype=np.float32)
    perm = _fc1_rows_chw_to_hwc(module.conv3.out_channels, module.image_size // 4)
    fc1_kernel = np.empty_like(arr(p["fc1"]["kernel"]))
    fc1_kernel[perm] = arr(p["fc1"]["kernel"])
    kernels = {name: arr(p[name]["kernel"]).transpose(3, 2, 0, 1) for name in _CONVS}  # HWIO -> OIHW
    kernels["fc1"] = fc1_kernel.T
    kernels["fc2"] = arr(p["fc2"]["kernel"]).T
    with torch.no_grad():
        for name in (*_CONVS, *_DENSES):
            layer = getattr(module, name)
            if tuple(layer.weight.shape) != kernels[name].shape:
                raise ValueError(f"{name}: torch weight {tuple(layer.weight.shape)} vs converted {kernels[name].shape}")
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernels[name])))
            layer.bias.copy_(torch.from_numpy(arr(p[name]["bias"])))
    return module
