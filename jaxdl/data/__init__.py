"""Datasets as numpy batches, on-device augmentation, and (later) tokenizers.

Never imports jaxdl.models or jaxdl.tasks.
"""
