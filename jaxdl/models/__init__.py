"""Pure Flax (linen) modules, one file per family. Imports only jax and flax."""

from jaxdl.models.cnn import MyNet

__all__ = ["MyNet"]
