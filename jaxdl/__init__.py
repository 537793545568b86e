"""jaxdl: classic deep-learning model families in JAX/Flax, one training engine.

Layers (imports only point downwards):
  experiments -> jaxdl.tasks -> (jaxdl.models, jaxdl.train, jaxdl.data)
"""

__version__ = "0.1.0"
