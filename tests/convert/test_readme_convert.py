"""README's "Weights from and to PyTorch", run as written: train_my_net.py (2 steps instead of 100),
the convert commands, the transcript's answers (PyTorch's and `jaxdl predict`'s agree), and the GPT-2
commands on a random GPT-2 saved where the download would put it."""

import re
import runpy
import shlex
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxdl import commands  # noqa: E402
from tests.inference.test_readme import ROOT, blocks  # noqa: E402


def python_block(name: str) -> str:
    text = open(f"{ROOT}/README.md", encoding="utf-8").read()
    return re.search(rf"<!-- python: {name} -->\n```python\n(.*?)```", text, re.S)[1]


def run(line: str, folder) -> None:
    words = shlex.split(line)
    if words[0] == "jaxdl":
        commands.main(words[1:])
    elif words[:2] == ["python", "-c"]:
        exec(compile(words[2], "README.md (python -c)", "exec"), {})
    else:
        assert words[:1] == ["python"] and len(words) == 2, line
        runpy.run_path(str(folder / words[1]), run_name="__main__")


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder with train_my_net.py and a 48x48 MyNet run at runs/cnn (made here from a fresh MY_NET:
    `--to torch` reads any MyNet run, and experiments/cnn.py would take a minute to make one)."""
    from tests.convert.seed_torch import MY_NET

    torch.manual_seed(0)
    torch.save(MY_NET().state_dict(), tmp_path / "fresh.pth")
    commands.main(["convert", "--from", "mynet", str(tmp_path / "fresh.pth"), "--out", str(tmp_path / "runs" / "cnn"),
                   "--mean", "0.3", "--std", "0.4"])
    script = python_block("train_my_net")
    assert "for step in range(100):" in script
    (tmp_path / "train_my_net.py").write_text(script.replace("range(100)", "range(2)"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("train_my_net", None)


def test_seed_mynet_to_jaxdl_and_back(user_folder, capsys):
    torch.set_num_threads(2)
    lines = [line.split("  #")[0].strip() for line in blocks("commands")["convert"].splitlines() if line.strip()]
    assert len(lines) == 5
    for line in lines:
        run(line, user_folder)
    printed = capsys.readouterr().out
    pytorch = dict(re.findall(r"^(digit_\d+\.png): PyTorch says (\d)$", printed, re.M))
    jax = dict(re.findall(r"^(digit_\d+\.png): (\d) \(", printed, re.M))
    assert len(pytorch) == 4 and jax == pytorch
    # the transcript shows the same commands, and answers that agree
    transcript = blocks("transcript")["convert"]
    shown = [line[2:] for line in transcript.splitlines() if line.startswith("$ ")]
    assert shown == lines[:3]
    assert dict(re.findall(r"^(digit_\d+\.png): PyTorch says (\d)$", transcript, re.M)) == dict(
        re.findall(r"^(digit_\d+\.png): (\d) \(", transcript, re.M))


def test_gpt2_commands(tmp_path, monkeypatch, capsys):
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, n_positions=128)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")  # where `hf download` puts it
    from tests.convert.test_gpt2_convert import bpe_tokenizer

    bpe_tokenizer().save(str(tmp_path / "gpt2" / "tokenizer.json"))
    monkeypatch.chdir(tmp_path)
    lines = [line.split("  #")[0].strip() for line in blocks("commands")["gpt2"].splitlines() if line.strip()]
    assert lines[0].startswith("hf download openai-community/gpt2 ") and "--local-dir gpt2" in lines[0]
    for line in lines[1:]:  # not the download: no test may use the internet
        run(line, tmp_path)
    printed = capsys.readouterr().out
    assert "The meaning of life is" in printed
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2-again")
    assert model.config.n_layer == 2 and (tmp_path / "gpt2-again" / "tokenizer.json").exists()
