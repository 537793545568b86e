"""Trained runs as objects: `load(workdir)` and each family's inference; fine-tuning's warm start;
`jax.export` artifacts. Sits above the tasks: experiments and the `jaxdl` command use it."""

from jaxdl.inference.classifier import Classifier
from jaxdl.inference.images import DiffusionModel, VectorModel
from jaxdl.inference.language import LanguageModel, Seq2SeqModel
from jaxdl.inference.trained import Trained, load

FAMILIES = {"classifier": Classifier, "language_model": LanguageModel, "seq2seq": Seq2SeqModel,
            "diffusion": DiffusionModel, "vector": VectorModel}

__all__ = ["load", "Trained", "Classifier", "LanguageModel", "Seq2SeqModel", "DiffusionModel", "VectorModel",
           "FAMILIES"]
