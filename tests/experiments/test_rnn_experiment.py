"""experiments/rnn.py end to end at small sizes: the workdir contract, resume by steps, every cell, bad input."""

import json

import jax
import numpy as np
import pytest

from experiments import rnn
from tests.experiments.workdir import exits_2, exits_2_untouched, latest_params

TINY = ["--hidden", "16", "--embed", "8", "--layers", "1", "--seq-len", "16", "--batch-size", "4",
        "--sample-length", "12", "--log-every", "2"]


def test_run_writes_the_contract(tmp_path, corpus):
    summary = rnn.main([*TINY, "--steps", "7", "--eval-every", "3", "--dataset", f"text:{corpus}",
                        "--workdir", str(tmp_path)])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("val_loss", "val_bpc", "tokens_per_sec", "compile_seconds", "num_params", "sample", "steps",
                "dataset", "device", "wall_seconds"):
        assert key in on_disk, key
    assert on_disk["steps"] == 7 and on_disk["dataset"] == f"text:{corpus}"
    assert on_disk["sample"].startswith("\n") and len(on_disk["sample"]) == 1 + 12  # default prompt: a newline
    assert summary["val_bpc"] == pytest.approx(summary["val_loss"] / np.log(2))
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["split"] == "test"] == [3, 6, 7]  # the last round is shorter
    assert (tmp_path / "curves.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "tokenizer.json").read_text())["kind"] == "char"


@pytest.fixture
def prompt():
    return ["--prompt", "It is"]


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, corpus, prompt):
    common = [*TINY, *prompt, "--eval-every", "3", "--dataset", f"text:{corpus}"]
    rnn.main([*common, "--steps", "5", "--workdir", str(tmp_path / "a")])
    rnn.main([*common, "--steps", "2", "--workdir", str(tmp_path / "b")])
    rnn.main([*common, "--steps", "5", "--workdir", str(tmp_path / "b")])
    for x, y in zip(jax.tree.leaves(latest_params(tmp_path / "a")), jax.tree.leaves(latest_params(tmp_path / "b"))):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_other_cells_and_the_byte_tokenizer_train(tmp_path, corpus, prompt, cell):
    summary = rnn.main([*TINY, *prompt, "--cell", cell, "--tokenizer", "byte", "--steps", "6", "--eval-every", "3",
                        "--lr", "0.02", "--dataset", f"text:{corpus}", "--workdir", str(tmp_path)])
    assert summary["sample"].startswith("It is") and np.isfinite(summary["val_loss"])
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first, last = [e["loss"] for e in events if e["split"] == "test"]
    assert last < first  # it learns


def test_a_bpe_run_resumes_fine_tunes_and_generates_with_its_own_tokenizer(tmp_path, corpus, capsys, monkeypatch):
    import jaxdl
    from jaxdl import commands
    from jaxdl.data import text

    run = tmp_path / "bpe"
    common = [*TINY, "--seq-len", "8", "--tokenizer", "bpe", "--vocab-size", "300", "--eval-every", "2",
              "--prompt", "It is", "--dataset", f"text:{corpus}"]
    rnn.main([*common, "--steps", "2", "--workdir", str(run)])
    saved = json.loads((run / "tokenizer.json").read_text())
    assert saved["kind"] == "bpe" and json.loads((run / "model.json").read_text())["tokenizer"] == saved
    trained = text.tokenizer_from_json(saved)
    assert trained.vocab_size <= 300 and trained.decode(trained.encode(corpus.read_text())) == corpus.read_text()

    def retrain(*args):
        raise AssertionError("a resumed or fine-tuned run trained its tokenizer again")

    monkeypatch.setattr(text, "train_tokenizer", retrain)
    assert rnn.main([*common, "--steps", "4", "--workdir", str(run)])["steps"] == 4  # resumed
    assert json.loads((run / "tokenizer.json").read_text()) == saved
    other = tmp_path / "other.txt"
    other.write_text("Quite other words: zebras, quokkas and the sea, again and again.\n" * 20, encoding="utf-8")
    rnn.main([*common, "--steps", "2", "--dataset", f"text:{other}", "--init-from", str(run),
              "--workdir", str(tmp_path / "tuned")])
    assert "in the vocabulary of" in capsys.readouterr().out
    assert json.loads((tmp_path / "tuned" / "tokenizer.json").read_text()) == saved
    monkeypatch.undo()

    lm = jaxdl.load(str(run))
    continuation = lm.generate("It is a truth", 20, seed=1)
    assert continuation and lm.tokenizer.to_json() == saved  # (an untrained model draws any bytes)
    capsys.readouterr()
    commands.main(["generate", str(run), "--prompt", "It is a truth", "--max-new-tokens", "20", "--seed", "1"])
    assert capsys.readouterr().out == "It is a truth" + continuation + "\n"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus):
    workdir = tmp_path_factory.mktemp("finished")
    rnn.main([*TINY, "--prompt", "It is", "--steps", "2", "--eval-every", "2", "--dataset", f"text:{corpus}",
              "--workdir", str(workdir)])
    return workdir


@pytest.mark.parametrize("argv,match", [
    (["--cell", "transformer"], "unknown --cell"),
    (["--seq-len", "200"], "longer than the validation split"),
    (["--prompt", "Zebra"], "not in the model's vocabulary"),
    (["--prompt", "@"], "--prompt '@': text has characters not in"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--top-k", "500"], "exceeds the vocabulary"),
    (["--epochs", "3"], "unrecognized arguments"),
    (["--hidden", "32"], "--hidden 16 -> 32"),
    (["--tokenizer", "byte"], "--tokenizer 'char' -> 'byte'"),
    (["--tokenizer", "bpe", "--vocab-size", "300"], "--tokenizer 'char' -> 'bpe'"),
    (["--tokenizer", "bpe", "--vocab-size", "256"], "--vocab-size must be >= 257"),
    (["--vocab-size", "1024"], "--vocab-size is for --tokenizer bpe or word"),
    (["--seed", "1"], "--seed 0 -> 1"),
    (["--dataset", "text:/no/such.txt"], "no such file"),
])
def test_bad_input_exits_2_and_leaves_a_finished_run_untouched(tmp_path, capsys, corpus, finished_run, argv, match):
    err = exits_2_untouched(rnn.main, [*TINY, "--prompt", "It is", "--steps", "4", "--eval-every", "2",
                                       "--dataset", f"text:{corpus}", *argv], finished_run, tmp_path, capsys)
    assert match in err, err


@pytest.mark.parametrize("content", [b"", b"\xff\xfe not utf-8 \x80"])
def test_empty_or_non_utf8_text_exits_2(tmp_path, capsys, content):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    err = exits_2(rnn.main, [*TINY, "--dataset", f"text:{path}", "--workdir", str(tmp_path / "run")], capsys)
    assert "empty" in err or "not UTF-8" in err
    assert not (tmp_path / "run").exists()
