"""The one training engine: state, optimizers, steps, loop, checkpoints, metrics.

Knows nothing of models or tasks: it trains any `loss(params, batch, rng)`.
"""

from jaxdl.train.config import TrainConfig
from jaxdl.train.loop import FitResult, fit
from jaxdl.train.optim import make_optimizer
from jaxdl.train.state import TrainState
from jaxdl.train.step import make_train_step

__all__ = ["TrainConfig", "TrainState", "FitResult", "fit", "make_optimizer", "make_train_step"]
