"""Model classes by name, and a module's description as plain JSON data (never code).

    describe(MyNet(10)) -> {"class": "MyNet", "fields": {"num_classes": 10, "image_size": 48, ...}}
    build({"class": "MyNet", "fields": {...}}) -> MyNet(num_classes=10, ...)

A run's `model.json` holds such a description; `build` turns it back into the module through
`MODELS`, so loading a trained model never unpickles or executes anything. Values are JSON types;
tuples come back as tuples (linen modules must stay hashable) and dtypes are written
`{"dtype": "bfloat16"}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdl.models.cnn import MyNet
from jaxdl.models.mlp import MLP
from jaxdl.models.recurrent import Recurrent, RecurrentLM, SequenceClassifier
from jaxdl.models.transformer import DecoderLM, Decoder, Encoder, EncoderDecoder
from jaxdl.models.unet import TextConditionedUNet, UNet

MODELS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (
    MyNet, MLP, Recurrent, RecurrentLM, SequenceClassifier, Encoder, Decoder, DecoderLM, EncoderDecoder, UNet,
    TextConditionedUNet)}
_NOT_FIELDS = ("parent", "name")


def _to_json(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _to_json(v) for k, v in value.items()}
    try:
        return {"dtype": jnp.dtype(value).name}
    except TypeError:
        raise TypeError(f"cannot describe the model field value {value!r} as JSON data") from None


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"dtype"}:
            name = jnp.dtype(value["dtype"]).name  # ValueError/TypeError for a name that is no dtype
            if not hasattr(jnp, name):
                raise ValueError(f"{value['dtype']!r} is not a dtype a model computes in")
            return getattr(jnp, name)
        return {k: _from_json(v) for k, v in value.items()}
    return value


def describe(module: nn.Module) -> dict[str, Any]:
    """The module's class name and constructor fields, as JSON data."""
    name = type(module).__name__
    if MODELS.get(name) is not type(module):
        raise TypeError(f"{name} is not in jaxdl.models.MODELS: register it to describe it")
    fields = {f.name: _to_json(getattr(module, f.name)) for f in dataclasses.fields(module)
              if f.init and f.name not in _NOT_FIELDS}
    return {"class": name, "fields": fields}


def build(description: dict[str, Any]) -> nn.Module:
    """The module a `describe` result describes; ValueError for an unknown class or field."""
    name = description.get("class")
    if name not in MODELS:
        raise ValueError(f"unknown model class {name!r}: jaxdl knows {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    known = {f.name for f in dataclasses.fields(cls)} - set(_NOT_FIELDS)
    fields = description.get("fields", {})
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{name} has no field(s) {', '.join(unknown)}")
    return cls(**{k: _from_json(v) for k, v in fields.items()})
