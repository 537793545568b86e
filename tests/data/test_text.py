"""Text data: tokenizers, specs, the contiguous split, training and validation windows, bad files."""

import numpy as np
import pytest

from jaxdl.data import text
from jaxdl.errors import UsageError


def test_char_tokenizer_round_trips_and_refuses_unknown_characters():
    tok = text.CharTokenizer("hello, world")
    assert tok.chars == " ,dehlorw" and tok.vocab_size == 9
    ids = tok.encode("hello world")
    assert ids.dtype == np.int32 and tok.decode(ids) == "hello world"
    with pytest.raises(UsageError, match="'xz'"):
        tok.encode("hold x z")


def test_byte_tokenizer_round_trips_any_text():
    tok = text.ByteTokenizer()
    s = "naïve café — 東京"
    ids = tok.encode(s)
    assert len(ids) == len(s.encode("utf-8")) and ids.max() < 256 and tok.decode(ids) == s


def test_embedded_corpus_is_split_contiguously_90_10():
    data = text.load_text(text.EMBEDDED)
    full = text.embedded_text()
    assert len(full) > 100_000 and full.startswith("First Citizen:")
    assert data.tokenizer.decode(data.train) + data.tokenizer.decode(data.valid) == full
    assert len(data.train) == int(0.9 * len(full)) and data.valid_chars == len(data.valid)


def test_text_file_spec_and_byte_tokenizer(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("ab\u00e9" * 100, encoding="utf-8")
    data = text.load_text(f"text:{path}", "byte")
    assert data.tokenizer.vocab_size == 256
    assert len(data.train) + len(data.valid) == len(("ab\u00e9" * 100).encode("utf-8"))
    assert data.valid_chars == 30  # bits per character divide by characters, not bytes


@pytest.mark.parametrize("content,match", [
    (b"", "empty"), (b"  \n\n", "empty"), (b"caf\xe9 au lait", "not UTF-8 text \\(byte 3"),
])
def test_bad_text_files_are_usage_errors(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=match):
        text.load_text(f"text:{path}")


def test_missing_file_and_unknown_tokenizer():
    with pytest.raises(UsageError, match="no such file"):
        text.load_text("text:/no/such/file.txt")
    with pytest.raises(UsageError, match="unknown --tokenizer"):
        text.load_text(text.EMBEDDED, "wordpiece")


def test_seq_len_longer_than_validation_split_is_refused(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 10)  # 100 characters: 10 of validation
    data = text.load_text(f"text:{path}")
    text.check_seq_len(data, 9)
    with pytest.raises(UsageError, match="longer than the validation split"):
        text.check_seq_len(data, 10)


def test_eval_windows_predict_every_validation_token_exactly_once():
    tokens = np.arange(1, 48, dtype=np.int32)  # 47 tokens: 46 predictions, windows of 8 -> 6 windows
    targets = []
    batches = list(text.eval_windows(tokens, seq_len=8, batch_size=4))
    assert len(batches) == 2 and all(b["tokens"].shape == (4, 9) for b in batches)
    for b in batches:
        np.testing.assert_array_equal(b["tokens"][:, 1:][b["mask"]] - 1, b["tokens"][:, :-1][b["mask"]])
        targets.extend(b["tokens"][:, 1:][b["mask"]].tolist())
    assert targets == tokens[1:].tolist()


def test_training_windows_depend_only_on_seed_and_step():
    tokens = np.arange(1000, dtype=np.int32)
    a = text.window_batches(tokens, 4, 16, seed=3)
    first = [a[s] for s in range(15)]
    b = text.window_batches(tokens, 4, 16, seed=3)  # read from step 12 on, as a resumed run does
    np.testing.assert_array_equal(b[12]["tokens"], first[12]["tokens"])
    w = first[0]["tokens"]
    assert w.shape == (4, 17) and (np.diff(w, axis=1) == 1).all()  # contiguous windows
    other_seed = text.window_batches(tokens, 4, 16, seed=4)[0]
    assert not np.array_equal(other_seed["tokens"], w)


def test_every_window_start_once_per_pass():
    tokens = np.arange(40, dtype=np.int32)  # 40 - 8 = 32 window starts: 8 steps of 4 windows a pass
    starts = np.concatenate([text.window_batches(tokens, 4, 8, seed=0)[s]["tokens"][:, 0] for s in range(16)])
    assert sorted(starts[:32]) == sorted(starts[32:]) == list(range(32))
    assert not np.array_equal(starts[:32], starts[32:])


def test_tokenizer_is_saved_and_a_different_one_refused(tmp_path):
    text.save_tokenizer(text.CharTokenizer("abc"), str(tmp_path))
    text.save_tokenizer(text.CharTokenizer("cab"), str(tmp_path))  # the same vocabulary: fine
    assert text.load_tokenizer(str(tmp_path)).chars == "abc"
    with pytest.raises(UsageError, match="another vocabulary"):
        text.save_tokenizer(text.CharTokenizer("abd"), str(tmp_path))


def test_tfds_tiny_shakespeare_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=1):
        data = text.load_text("tiny_shakespeare")
    assert len(data.train) > 0 and len(data.valid) > 0 and data.name == "tiny_shakespeare"


def test_image_dataset_for_a_language_model_is_refused():
    with pytest.raises(UsageError, match="image dataset"):
        text.load_text("digits")
