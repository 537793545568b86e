"""Captions from class labels, prompt tokens, and the class a prompt names."""

import numpy as np
import pytest

from jaxdl.data import captions
from jaxdl.errors import UsageError

DIGITS = [str(i) for i in range(10)]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.mark.parametrize("names", [DIGITS, FASHION])
def test_every_caption_names_its_own_class(names):
    table = captions.captions(names)
    assert len(table) == len(names) and len({len(row) for row in table}) == 1 and len(table[0]) >= 4
    for k, row in enumerate(table):
        assert len(set(row)) == len(row)
        for caption in row:
            assert captions.label_of(caption, names) == k, caption


def test_digit_captions_use_numerals_and_words():
    assert captions.captions(DIGITS)[7][:4] == ["a handwritten seven", "the digit 7", "7", "seven"]


def test_label_of_prompts_naming_no_class_or_several():
    assert captions.label_of("A Handwritten SEVEN!", DIGITS) == 7
    assert captions.label_of("a cat", DIGITS) == -1
    assert captions.label_of("a three or a seven", DIGITS) == -1
    assert captions.label_of("a pair of sandal", FASHION) == 5
    assert captions.label_of("a shirt", FASHION) == 6  # not "T-shirt/top": whole words only
    assert captions.label_of("a t shirt top", FASHION) == 0


def test_encode_start_token_bytes_and_padding():
    tokens, lengths = captions.encode(["7", "é", ""], 6)
    assert tokens.shape == (3, 6) and tokens.dtype == np.int32
    np.testing.assert_array_equal(lengths, [2, 3, 1])
    np.testing.assert_array_equal(tokens[0], [captions.START, ord("7") + 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(tokens[1, :3], [captions.START, 0xC3 + 2, 0xA9 + 2])  # UTF-8 of é
    np.testing.assert_array_equal(tokens[2], [captions.START, 0, 0, 0, 0, 0])  # the null prompt
    assert tokens.max() < captions.VOCAB_SIZE
    with pytest.raises(UsageError, match="at most 5"):
        captions.encode(["abcdef"], 6)


def test_caption_table_shape():
    tokens, lengths = captions.caption_table(DIGITS, 40)
    assert tokens.shape == (10, len(captions.captions(DIGITS)[0]), 40) and lengths.shape == tokens.shape[:2]
    assert (lengths >= 2).all()


def test_parse_prompts():
    assert captions.parse_prompts(" a seven | the digit 3 ") == ["a seven", "the digit 3"]
    for bad in ("|", " ", "a seven||the digit 3"):
        with pytest.raises(UsageError, match="empty prompt"):
            captions.parse_prompts(bad)


def test_caption_table_refuses_a_width_its_captions_do_not_fit():
    with pytest.raises(UsageError, match="raise --max-prompt-bytes"):
        captions.caption_table(DIGITS, 20)
