"""`load(workdir)`: a finished (or interrupted) run's model, params and description, ready for inference.

Reads `WORKDIR/model.json` (plain data; the model class comes from `jaxdl.models.MODELS`), then the
params alone (the EMA where the run kept one; never the optimizer state) from the run's orbax
checkpoints onto this process's first device, whatever mesh wrote them. Builds no training step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from jaxdl.errors import UsageError
from jaxdl.models.registry import build
from jaxdl.train.description import load_params, read_info
from jaxdl.train.state import num_params as count_params


@dataclasses.dataclass
class Trained:
    """A trained model: `model` (the linen module), `params`, `info` (model.json), `step`, `workdir`."""

    model: nn.Module
    params: Any
    info: dict[str, Any]
    workdir: str
    step: int

    @property
    def family(self) -> str:
        return self.info["family"]

    @property
    def num_params(self) -> int:
        return count_params(self.params)  # trainable numbers: running statistics are not counted

    def example_inputs(self) -> tuple | None:
        """Arguments of one forward pass (shapes and dtypes matter, values do not); None: not checked."""
        return None

    def check_params(self) -> None:
        """Refuse params that do not fit the model model.json describes (an edited model.json, or a
        checkpoint of another run), naming the first differences."""
        inputs = self.example_inputs()
        if inputs is None:
            return
        want = jax.eval_shape(lambda: self.model.init(jax.random.key(0), *inputs))["params"]
        have = self.params["params"] if isinstance(self.params, dict) and "params" in self.params else self.params
        shapes = lambda tree: {jax.tree_util.keystr(k): tuple(v.shape)
                               for k, v in jax.tree_util.tree_leaves_with_path(tree)}
        a, b = shapes(have), shapes(want)
        diff = [f"{k}: checkpoint {a.get(k, 'missing')}, model.json {b.get(k, 'missing')}"
                for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            raise UsageError(f"{self.workdir}: the checkpoint does not fit the model in model.json ({'; '.join(diff[:3])}"
                             f"{f' and {len(diff) - 3} more' if len(diff) > 3 else ''}): restore the run's own "
                             "model.json, or point at the run these params belong to")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.info['model']['class']}, {self.num_params:,} parameters, "
                f"step {self.step}, {self.workdir})")


def load(workdir: str, checkpoint: str | int = "best", member: int = 0) -> Trained:
    """The run in `workdir` as its family's inference object (Classifier, LanguageModel, Seq2SeqModel,
    DiffusionModel or VectorModel); bad workdirs and checkpoints raise UsageError."""
    from jaxdl.inference import FAMILIES

    workdir = str(workdir)
    info = read_info(workdir)
    if info["family"] not in FAMILIES:
        raise UsageError(f"{workdir}/model.json has family {info['family']!r}, which this jaxdl does not know")
    try:
        model = build(info["model"])
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise UsageError(f"{workdir}/model.json: {e}: restore it or retrain") from None
    params, step = load_params(workdir, info, checkpoint, member)
    trained = FAMILIES[info["family"]](model, params, info, workdir, step)
    trained.check_params()
    return trained
