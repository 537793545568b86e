"""Fixtures the experiment tests share."""

import pytest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small UTF-8 text file for the language-model experiments."""
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("It is a truth universally acknowledged, that a single man in possession of a good "
                    "fortune, must be in want of a wife.\n" * 8, encoding="utf-8")
    return path
