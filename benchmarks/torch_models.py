"""PyTorch reference models, for parity tests and speed comparisons only.

torch is never a runtime dependency of jaxdl: this module is imported by
`benchmarks/` scripts and by tests that `pytest.importorskip("torch")` first.

`MY_NET` is the seed's PyTorch CNN (NCHW); `mynet_params_from_torch` and
`mynet_params_to_torch` move its weights (through `jaxdl.convert.mynet`) to and from jaxdl's Flax `MyNet`
(NHWC), so the two can be compared output for output and step for step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from jaxdl.convert.mynet import params_from_state_dict, state_dict_from_params



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


def mynet_params_from_torch(module: MY_NET) -> dict[str, Any]:
    """Flax params for jaxdl's MyNet with the same weights as `module` (float32 numpy arrays)."""
    return params_from_state_dict({k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})


def mynet_params_to_torch(params: dict[str, Any], module: MY_NET) -> MY_NET:
    """Load Flax MyNet params into `module` in place (the inverse of `mynet_params_from_torch`); returns it."""
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict_from_params(params).items()}, strict=True)
    return module
