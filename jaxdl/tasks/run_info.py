"""What each family's `model.json` holds: the model, and everything its inference needs that the
training run knew (classes, input size, normalisation, tokenizer, vocabulary, noise schedule).

Each function returns the JSON data an experiment hands to `fit(describe=...)`; `jaxdl.load`
reads it back. Families: classifier (MyNet, or an MLP on flattened images), vector (an MLP on
feature vectors: xor, sine), language_model, seq2seq, diffusion.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxdl.data.augment import ImagePreprocess
from jaxdl.models.registry import build, describe
from jaxdl.train import description
from jaxdl.train.state import num_params

description.read_models_with(lambda model: describe(build(model)))  # old model.json read with today's defaults


def _base(family: str, model: nn.Module, params: Any, dataset: str, params_key: str = "params",
          members: int = 1, labels: list[str] | None = None, label_field: str | None = None) -> dict[str, Any]:
    """The keys every family has. `labels`: what each output row means, in order (class names,
    tokens), and `label_field`, the model field that counts them: fine-tuning matches rows by label."""
    count = num_params(params)  # one model's (trainable: no running statistics), also when several train at once
    info = {"family": family, "model": describe(model), "num_params": int(count), "dataset": dataset,
            "params": params_key, "members": members}
    if labels is not None:
        info.update(labels=list(labels), label_field=label_field)
    return info


def classifier_info(model: nn.Module, params: Any, preprocess: ImagePreprocess, dataset: str,
                    class_names: list[str], data_shape: tuple[int, int, int], flatten: bool = False,
                    members: int = 1) -> dict[str, Any]:
    """An image classifier trained on images of `data_shape` (H, W, C): other images are brought to
    that size and channel count first, then preprocessed as in evaluation (resized to the model's
    `input_size` and channels, normalised; flattened for an MLP)."""
    H, W, C = data_shape
    field = "num_classes" if hasattr(model, "num_classes") else "out"
    outputs = getattr(model, field)
    class_names = list(class_names) + [str(i) for i in range(len(class_names), outputs)]  # --num-classes beyond the data
    return {**_base("classifier", model, params, dataset, members=members, labels=class_names, label_field=field),
            "classifier": {
        "class_names": class_names, "data_size": [int(H), int(W)], "data_channels": int(C),
        "input_size": preprocess.image_size, "input_channels": preprocess.channels,
        "mean": list(preprocess.mean), "std": list(preprocess.std), "flatten": flatten}}


def vector_info(model: nn.Module, params: Any, task: str, loss: str, inputs: int,
                members: int = 1) -> dict[str, Any]:
    """An MLP on feature vectors: `loss` says how to read its outputs (bce: a probability, mse: values)."""
    return {**_base("vector", model, params, task, members=members),
            "vector": {"task": task, "loss": loss, "inputs": inputs}}


def language_model_info(model: nn.Module, params: Any, tokenizer_json: dict, dataset: str,
                        default_prompt: str) -> dict[str, Any]:
    tokens = list(tokenizer_json["chars"]) if tokenizer_json["kind"] == "char" else [
        f"{tokenizer_json['kind']}:{i}" for i in range(model.vocab_size)]
    return {**_base("language_model", model, params, dataset, labels=tokens, label_field="vocab_size"),
            "tokenizer": tokenizer_json,
            "language_model": {"context": getattr(model, "max_len", None), "default_prompt": default_prompt}}


def seq2seq_info(model: nn.Module, params: Any, task: str, chars: str, pad: int, bos: int, eos: int,
                 max_target_tokens: int) -> dict[str, Any]:
    """Sources and targets are strings over `chars` (ids 3..), with PAD/BOS/EOS ids below them."""
    return {**_base("seq2seq", model, params, f"generated:{task}"), "seq2seq": {
        "task": task, "chars": chars, "pad": pad, "bos": bos, "eos": eos, "first_char_id": 3,
        "max_target_tokens": max_target_tokens}}


def diffusion_info(model: nn.Module, params: Any, dataset: str, image_shape: tuple[int, int, int],
                   schedule: str, timesteps: int, class_names: list[str], class_prompts: list[str],
                   max_prompt_bytes: int) -> dict[str, Any]:
    """A text-conditioned denoiser sampled from its EMA params; prompts are UTF-8 bytes after a
    start token (jaxdl.data.captions)."""
    return {**_base("diffusion", model, params, dataset, params_key="ema"), "diffusion": {
        "image_shape": list(image_shape), "schedule": schedule, "timesteps": timesteps,
        "class_names": list(class_names), "class_prompts": list(class_prompts),
        "prompt_format": "utf-8 bytes + 2 after a start token (1), pad 0", "max_prompt_bytes": max_prompt_bytes}}
