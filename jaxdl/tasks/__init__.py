"""Objectives that glue a model family to the engine: loss, evaluation, reports, sampling."""
