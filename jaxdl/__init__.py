"""jaxdl: classic deep-learning model families in JAX/Flax, one training engine.

Layers (imports only point downwards):
  experiments, jaxdl command -> jaxdl.inference -> jaxdl.tasks -> (jaxdl.models, jaxdl.train, jaxdl.data)

`jaxdl.load(workdir)` gives a trained run's model and its family's inference. Importing jaxdl
imports nothing else (no jax, no XLA backend): `load` pulls in the rest when first used.
"""

__version__ = "0.1.0"


def load(workdir, checkpoint="best", member=0):
    """The run in `workdir` (model.json + its checkpoint: "best", "latest" or a step) as its family's
    inference object: `Classifier.predict`, `LanguageModel.generate`, `Seq2SeqModel.transduce`,
    `DiffusionModel.sample`, `VectorModel.predict`; with `.model`, `.params`, `.info`."""
    from jaxdl.inference import load as _load

    return _load(workdir, checkpoint, member)
