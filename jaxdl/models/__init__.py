"""Pure Flax (linen) modules, one file per family. Imports only jax and flax.

Every model class is exported here; `MODELS` maps class names to them, and `describe` / `build`
turn a module into JSON data and back (what a run's `model.json` holds).
"""

from jaxdl.models.cnn import MyNet
from jaxdl.models.mlp import MLP
from jaxdl.models.recurrent import GRU, LSTM, Recurrent, RecurrentLM, SequenceClassifier, SimpleRNN
from jaxdl.models.registry import MODELS, build, describe
from jaxdl.models.transformer import Decoder, DecoderLM, Encoder, EncoderDecoder
from jaxdl.models.unet import TextConditionedUNet, UNet

__all__ = ["MyNet", "MLP", "Recurrent", "SimpleRNN", "LSTM", "GRU", "RecurrentLM", "SequenceClassifier", "Encoder",
           "Decoder", "DecoderLM", "EncoderDecoder", "UNet", "TextConditionedUNet", "MODELS", "describe", "build"]
