"""The README's "Use a trained model" and "The models in your own JAX code" sections, run as written
(experiments get the tests' tiny sizes appended, so they resume the tiny runs made here)."""

import os
import re
import shlex
import shutil

import numpy as np
import pytest
from PIL import Image

from experiments import cnn, diffusion, mlp, rnn, transformer, typed_digits
from jaxdl import commands
from jaxdl.data.images import load_digits
from tests.inference.conftest import CNN, DIFFUSION, RNN, SEQ2SEQ

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = {"cnn.py": (cnn.main, CNN), "rnn.py": (rnn.main, RNN), "diffusion.py": (diffusion.main, DIFFUSION),
               "transformer.py": (transformer.main, SEQ2SEQ), "mlp.py": (mlp.main, []),
               "typed_digits.py": (typed_digits.main, ["--per-font", "1", "--size", "12"])}


def blocks(kind: str) -> dict[str, str]:
    """`<!-- kind: name -->` followed by a fenced block -> {name: the block's text}."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return {m[1]: m[2] for m in re.finditer(rf"<!-- {kind}: ([\w-]+) -->\n```\w*\n(.*?)```", text, re.S)}


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory, cnn_run, rnn_run, seq2seq_run, diffusion_run):
    """What a user has after the README's training commands, with tiny runs, and their own files."""
    home = tmp_path_factory.mktemp("user")
    for name, (workdir, _) in {"cnn": cnn_run, "rnn": rnn_run, "reverse": seq2seq_run,
                               "diffusion": diffusion_run}.items():
        shutil.copytree(workdir, home / "runs" / name)
    digit = load_digits().test.images[0, :, :, 0]
    Image.fromarray(np.kron(digit, np.ones((4, 4), np.uint8))).save(home / "my_digit.png")
    paper = np.full((60, 40), 230, np.uint8)
    paper[10:42, 4:36] = 255 - np.kron(digit, np.ones((4, 4), np.uint8))
    Image.fromarray(paper).convert("RGB").save(home / "photo_of_a_digit.png")
    shutil.copy(os.path.join(ROOT, "LICENSE"), home / "LICENSE")
    shutil.copy(home / "my_digit.png", home / "seven.png")
    return home


def run_line(line: str) -> None:
    words = shlex.split(line)
    if words[0] == "jaxdl":
        extra = ["--epochs", "1", "--steps-per-epoch", "5"] if words[1:3] == ["train", "mlp"] else []
        commands.main(words[1:] + extra)
    elif words[:2] == ["python", "-c"]:
        exec(compile(words[2], "README.md (python -c)", "exec"), {})
    else:
        assert words[:1] == ["python"] and words[1].startswith("experiments/"), line
        main, tiny = EXPERIMENTS[os.path.basename(words[1])]
        main(words[2:] + tiny)


@pytest.mark.parametrize("name", ["first", "use", "fine-tune"])
def test_readme_commands_run(name, user_folder, monkeypatch):
    monkeypatch.chdir(user_folder)
    lines = [line.split("  #")[0].strip() for line in blocks("commands")[name].splitlines() if line.strip()]
    assert lines
    for line in lines:
        run_line(line)
    assert (user_folder / "mynet.jax").exists() or name != "use"


def test_readme_transcript_commands_run(user_folder, monkeypatch, capsys):
    monkeypatch.chdir(user_folder)
    lines = [line[2:].split("  #")[0].strip() for line in blocks("transcript")["printed"].splitlines()
             if line.startswith("$ ")]
    assert len(lines) == 3
    for line in lines:
        run_line(line)
    assert "seven.png: " in capsys.readouterr().out


@pytest.mark.parametrize("name", ["use", "export", "models", "fit"])
def test_readme_python_runs(name, user_folder, monkeypatch):
    monkeypatch.chdir(user_folder)
    if name == "export" and not (user_folder / "mynet.jax").exists():
        commands.main(["export", "runs/cnn", "--out", "mynet.jax"])
    exec(compile(blocks("python")[name], f"README.md ({name})", "exec"), {})
