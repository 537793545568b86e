"""The trained tokenizers (jaxdl.data.subword): round trips, vocabulary sizes, training on the train
split only, determinism, saving with a run, the bits-per-character definition, --vocab-size checks."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy.special import log_softmax

from jaxdl.data import subword, text
from jaxdl.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNSEEN = "naïve café — 東京 😀 Ω≈ç√ tab\there\r\nNUL\x00 end  "  # nothing like it in Shakespeare


@pytest.fixture(scope="module")
def shakespeare():
    t = text.embedded_text()
    return t[:int(len(t) * text.TRAIN_FRACTION)]


@pytest.fixture(scope="module")
def bpe(shakespeare):
    return subword.train_tokenizer("bpe", shakespeare, 512)


@pytest.fixture(scope="module")
def word(shakespeare):
    return subword.train_tokenizer("word", shakespeare, 2000)


def test_bpe_decodes_any_text_exactly(bpe, shakespeare):
    for s in (shakespeare[:5000], UNSEEN, "", " ", "\n\n\n", "x" * 1000, "\ufffd"):
        ids = bpe.encode(s)
        assert ids.dtype == np.int32 and bpe.decode(ids) == s
    assert len(bpe.encode(shakespeare[:5000])) < 5000 * 0.6  # merges: fewer tokens than characters


def test_word_decodes_known_words_exactly_and_marks_the_rest(word, shakespeare):
    s = "To be, or not to be: that is the question.\n\n"
    assert subword.UNKNOWN not in word.decode(word.encode(s)) and word.decode(word.encode(s)) == s
    ids = word.encode("the xyzzy, and Zyqq!")
    assert (ids == word.unknown_id).sum() == 2
    assert word.decode(ids) == f"the {subword.UNKNOWN}, and {subword.UNKNOWN}!"
    line = "Where's  my\tlord?\n"
    small = subword.train_tokenizer("word", line, 50)
    pieces = [small.decode([i]) for i in small.encode(line)]
    assert pieces == ["Where", "'", "s", "  ", "my", "\t", "lord", "?", "\n"]  # words, whitespace runs, marks


@pytest.mark.parametrize("kind,size", [("bpe", 257), ("bpe", 300), ("word", 2), ("word", 50)])
def test_the_vocabulary_size_is_respected(shakespeare, kind, size):
    tok = subword.train_tokenizer(kind, shakespeare, size)
    assert tok.vocab_size == size  # the text has enough to fill it
    assert tok.encode(shakespeare[:20000]).max() < size


def test_a_small_text_gives_a_smaller_vocabulary():
    tok = subword.train_tokenizer("word", "a b a", 100)
    assert tok.vocab_size == 4  # [UNK], "a", " ", "b"


def test_trained_on_the_training_split_only(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("the cat sat on the mat.\n" * 100 + "the zebra.\n", encoding="utf-8")
    data = text.load_text(f"text:{path}", "word", vocab_size=100)
    unknown = data.tokenizer.unknown_id
    assert unknown not in data.train and unknown in data.valid  # "zebra" is only in the last 10%
    assert data.tokenizer.decode(data.valid).endswith(f"mat.\nthe {subword.UNKNOWN}.\n")
    bpe = text.load_text(f"text:{path}", "bpe", vocab_size=300).tokenizer
    assert "zebra" not in [bpe.decode([i]) for i in range(bpe.vocab_size)]
    assert "Ġmat" in bpe.to_json()["huggingface"]["model"]["vocab"]  # " mat" in byte-level spelling


def test_training_is_deterministic_in_any_process(shakespeare, bpe, word):
    for kind, tok, size in (("bpe", bpe, 512), ("word", word, 2000)):
        assert subword.train_tokenizer(kind, shakespeare, size).to_json() == tok.to_json()
    # another process with other hash seeds and thread counts: what every process of a multi-host run does
    code = ("import json, sys; from jaxdl.data import subword, text; t = text.embedded_text();"
            "t = t[:int(len(t) * text.TRAIN_FRACTION)];"
            "print(json.dumps([subword.train_tokenizer(k, t, n).to_json() for k, n in (('bpe', 512), ('word', 2000))]))")
    env = {**os.environ, "PYTHONHASHSEED": "123", "RAYON_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [bpe.to_json(), word.to_json()]


def test_saved_and_loaded_with_a_run(tmp_path, bpe, word):
    for tok in (bpe, word):
        entry = json.loads(json.dumps(tok.to_json()))  # as model.json holds it
        assert entry["kind"] == tok.kind and entry["vocab_size"] == tok.vocab_size
        again = text.tokenizer_from_json(entry)
        assert again.to_json() == tok.to_json() and list(again.encode(UNSEEN)) == list(tok.encode(UNSEEN))
        workdir = tmp_path / tok.kind
        text.save_tokenizer(tok, str(workdir))
        text.save_tokenizer(again, str(workdir))  # the same vocabulary: accepted
        loaded = text.load_tokenizer(str(workdir))
        assert loaded.kind == tok.kind and loaded.decode(loaded.encode("To be")) == "To be"
    other = subword.train_tokenizer("bpe", "other text entirely " * 50, 300)
    with pytest.raises(UsageError, match="trained with another vocabulary"):
        text.save_tokenizer(other, str(tmp_path / "bpe"))


def test_a_saved_tokenizer_is_reused_not_trained_again(tmp_path, bpe):
    path = tmp_path / "t.txt"
    path.write_text("Entirely different words, and a different vocabulary.\n" * 50, encoding="utf-8")
    data = text.load_text(f"text:{path}", "bpe", vocab_size=300, saved=bpe.to_json())
    assert data.tokenizer.to_json() == bpe.to_json() and data.tokenizer.vocab_size == 512
    assert text.load_text(f"text:{path}", "bpe", vocab_size=300).tokenizer.to_json() != bpe.to_json()
    assert text.load_text(f"text:{path}", "word", saved=bpe.to_json()).tokenizer.kind == "word"  # another kind


def test_a_corrupt_saved_tokenizer_is_one_clear_error():
    with pytest.raises(UsageError, match="saved bpe tokenizer cannot be read"):
        text.tokenizer_from_json({"kind": "bpe", "vocab_size": 300, "huggingface": {"model": "nonsense"}})
    with pytest.raises(UsageError, match="saved word tokenizer cannot be read"):
        text.tokenizer_from_json({"kind": "word", "vocab_size": 300})


@pytest.mark.parametrize("kind,size", [("char", 0), ("bpe", 300), ("word", 200)])
def test_bits_per_character_are_total_nats_over_characters(tmp_path, kind, size):
    """bpc = nats per predicted token x validation tokens per character / ln 2, which is the whole
    validation split's nats over its characters / ln 2, but for its first token (never predicted)."""
    from jaxdl.models.recurrent import RecurrentLM
    from jaxdl.tasks.language_model import LanguageModel

    path = tmp_path / "t.txt"
    path.write_text(text.embedded_text()[:20000], encoding="utf-8")
    data = text.load_text(f"text:{path}", kind, vocab_size=size or subword.VOCAB_SIZE)
    model = RecurrentLM(data.tokenizer.vocab_size, "lstm", 8, 16, 1, 0.0, 1)
    task, seq_len = LanguageModel(model), 32
    params = task.init(jax.random.key(0), {"tokens": data.train[None, :seq_len + 1]})
    bpc = task.evaluate(params, text.eval_windows(data.valid, seq_len, 8), data.tokens_per_char)["bpc"]
    nats = 0.0  # recomputed: every window from a fresh state, as evaluation reads it
    for start in range(0, len(data.valid) - 1, seq_len):
        window = data.valid[start:start + seq_len + 1]
        logp = log_softmax(np.asarray(model.apply(params, window[None, :-1])[0][0], np.float64), axis=-1)
        nats -= float(np.take_along_axis(logp, window[1:, None], 1).sum())
    n = len(data.valid)
    assert bpc == pytest.approx(nats / (n - 1) * n / data.valid_chars / math.log(2), rel=1e-5)
    assert bpc == pytest.approx(nats / data.valid_chars / math.log(2), rel=2 / n)
    assert data.valid_chars == 2000 and (kind == "char") == (n == data.valid_chars)


@pytest.mark.parametrize("argv,match", [
    (["--tokenizer", "bpe", "--vocab-size", "256"], "--vocab-size must be >= 257 for --tokenizer bpe"),
    (["--tokenizer", "word", "--vocab-size", "1"], "--vocab-size must be >= 2 for --tokenizer word"),
    (["--tokenizer", "bpe", "--vocab-size", str(2 ** 20 + 1)], "--vocab-size must be at most 1,048,576"),
    (["--tokenizer", "char", "--vocab-size", "1024"], "--vocab-size is for --tokenizer bpe or word"),
    (["--tokenizer", "byte", "--vocab-size", "300"], "drop --vocab-size 300"),
    (["--tokenizer", "wordpiece"], "unknown --tokenizer 'wordpiece'"),
])
def test_bad_vocab_sizes_are_refused_in_one_line(argv, match):
    from jaxdl import cli
    from jaxdl.tasks.text_lm import TextLMConfig

    with pytest.raises(UsageError, match=match) as e:
        cli.parse(TextLMConfig, argv)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("argv", [["--tokenizer", "bpe", "--vocab-size", "257"], ["--tokenizer", "word"],
                                  ["--tokenizer", "bpe", "--vocab-size", str(2 ** 20)], ["--tokenizer", "byte"]])
def test_good_vocab_sizes_are_accepted(argv):
    from jaxdl import cli
    from jaxdl.tasks.text_lm import TextLMConfig

    assert cli.parse(TextLMConfig, argv).tokenizer == argv[1]
