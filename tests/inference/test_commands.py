"""The `jaxdl` command end to end: every subcommand, --help, and bad input (one line, exit 2, workdir untouched)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import jaxdl
from jaxdl import commands
from jaxdl.data.images import load_digits
from tests.experiments.workdir import snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def jaxdl_command():
    """The installed console script, or the module where the package is not installed."""
    found = shutil.which("jaxdl")
    return [found] if found else [sys.executable, "-m", "jaxdl.commands"]


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    test = load_digits().test
    paths = []
    for i in range(3):
        paths.append(str(root / f"digit{i}.png"))
        Image.fromarray(np.repeat(np.repeat(test.images[i, :, :, 0], 4, 0), 4, 1)).save(paths[-1])
    return paths, test.labels[:3]


def run(argv, capsys):
    capsys.readouterr()
    commands.main(argv)
    return capsys.readouterr().out


def test_every_subcommand_has_help(capsys):
    for name in ("info", "predict", "generate", "transduce", "sample", "export", "train"):
        with pytest.raises(SystemExit) as e:
            commands.main([name, "--help"])
        assert e.value.code == 0 and "usage: jaxdl " + name in capsys.readouterr().out


def test_info(cnn_run, capsys):
    out = run(["info", str(cnn_run[0])], capsys)
    assert "classifier, MyNet(" in out and f"{cnn_run[1]['num_params']:,}" in out and "digits" in out
    assert "test_accuracy" in out
    as_json = json.loads(run(["info", str(cnn_run[0]), "--json"], capsys))
    assert as_json["model"]["family"] == "classifier" and as_json["checkpoints"] == [44, 88]


def test_predict_as_text_and_json(cnn_run, digit_pngs, capsys):
    paths, labels = digit_pngs
    out = run(["predict", str(cnn_run[0]), *paths, "--top-k", "2"], capsys).splitlines()
    assert len(out) == 3 and all(line.startswith(p + ": ") and line.count("(") == 2 for line, p in zip(out, paths))
    rows = [json.loads(line) for line in run(["predict", str(cnn_run[0]), "--json", *paths], capsys).splitlines()]
    want = jaxdl.load(cnn_run[0]).predict_files(paths)
    for row, p, path in zip(rows, want, paths):
        assert row["file"] == path and row["index"] == int(p.argmax()) and row["class"] == str(p.argmax())
        np.testing.assert_allclose(row["probabilities"], p, atol=1e-6)


def test_generate_transduce_sample_export(rnn_run, seq2seq_run, diffusion_run, cnn_run, tmp_path, capsys):
    out = run(["generate", str(rnn_run[0]), "--prompt", "ROMEO:", "--max-new-tokens", "12", "--seed", "3"], capsys)
    assert out == "ROMEO:" + jaxdl.load(rnn_run[0]).generate("ROMEO:", 12, seed=3) + "\n"
    out = run(["transduce", str(seq2seq_run[0]), "0123", "98"], capsys).splitlines()
    assert [line.split(" -> ")[0] for line in out] == ["0123", "98"]
    grid = tmp_path / "grid.png"
    out = run(["sample", str(diffusion_run[0]), "--prompt", "a handwritten seven|3", "--num", "2", "--steps", "2",
               "--out", str(grid)], capsys)
    assert "2 x 2 images" in out and Image.open(grid).size[0] > 50
    out = run(["export", str(cnn_run[0]), "--out", str(tmp_path / "f.jax"), "--platforms", "cpu"], capsys)
    assert (tmp_path / "f.jax").stat().st_size > 1000 and (tmp_path / "f.jax.json").exists()


def test_train_runs_the_experiment(tmp_path, capsys):
    run(["train", "mlp", "--task", "xor", "--epochs", "1", "--steps-per-epoch", "5", "--workdir", str(tmp_path)],
        capsys)
    assert json.loads((tmp_path / "model.json").read_text())["family"] == "vector"


def test_predict_through_the_console_script(cnn_run, digit_pngs):
    paths, _ = digit_pngs
    done = subprocess.run([*jaxdl_command(), "predict", str(cnn_run[0]), paths[0]], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith(paths[0] + ": "), done.stderr


@pytest.mark.parametrize("argv,match", [
    (["predict", "{cnn}", "{bad_png}"], "cannot read image"),
    (["predict", "{rnn}", "{png}"], "for classifier runs"),
    (["predict", "{cnn}", "{png}", "--checkpoint", "7"], "no checkpoint of step 7"),
    (["predict", "{cnn}", "{png}", "--checkpoint", "first"], "best, latest or a step"),
    (["predict", "{cnn}", "{png}", "--top-k", "0"], "--top-k must be >= 1"),
    (["info", "{empty}"], "no model.json"),
    (["generate", "{empty}", "--prompt", "x"], "no model.json"),
    (["generate", "{rnn}", "--prompt", "\u03a9\u03a9"], "vocabulary"),
    (["generate", "{rnn}", "--max-new-tokens", "0"], "max_new_tokens"),
    (["generate", "{rnn}", "--top-p", "0"], "top_p"),
    (["transduce", "{seq2seq}", "1x2"], "does not know"),
    (["sample", "{diffusion}", "--prompt", "a seven||"], "empty prompt"),
    (["sample", "{diffusion}", "--prompt", "a seven", "--steps", "0"], "steps in 1..50"),
    (["sample", "{diffusion}", "--prompt", "a seven", "--out", "{empty}/no/such/grid.png"], "cannot write"),
    (["export", "{cnn}", "--out", "{empty}/no/such/f.jax"], "cannot write"),
    (["export", "{diffusion}", "--out", "{empty}/f.jax"], "classifier, language model or vector"),
    (["export", "{cnn}", "--out", "{cnn}/model"], "inside the run's workdir"),
    (["sample", "{diffusion}", "--prompt", "a seven", "--out", "{empty}/grid.jpg"], "name it *.png"),
    (["info", "{damaged}"], "damaged"),
    (["predict", "{damaged}", "{png}"], "damaged"),
    (["train", "gan"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(argv, match, cnn_run, rnn_run, seq2seq_run, diffusion_run,
                                                          digit_pngs, tmp_path, capsys):
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "model.json").write_text('{"format": 1, "family": "classifier", "model": 3}')
    where = {"cnn": cnn_run[0], "rnn": rnn_run[0], "seq2seq": seq2seq_run[0], "diffusion": diffusion_run[0],
             "png": digit_pngs[0][0], "bad_png": tmp_path / "bad.png", "empty": tmp_path / "empty",
             "damaged": tmp_path / "damaged"}
    argv = [a.format(**where) for a in argv]
    before = {k: snapshot(v) for k, v in where.items() if k in ("cnn", "rnn", "seq2seq", "diffusion", "empty")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        commands.main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "\n" not in err and match in err, err
    assert {k: snapshot(where[k]) for k in before} == before
