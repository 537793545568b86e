"""Bad input to `jaxdl convert`: one `error:` line naming the problem, exit status 2, nothing written
(no --out, no partial directory beside it, the source untouched)."""

import os
import pickle

import pytest

torch = pytest.importorskip("torch")

from jaxdl import commands  # noqa: E402
from tests.convert.seed_torch import MY_NET, CharLM  # noqa: E402


class NotATensor:
    """Something torch.load(weights_only=True) must refuse to unpickle."""


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return MY_NET().state_dict()


def refused(argv, capsys, folder):
    """Run `jaxdl ARGV`: exit 2, one error line (returned), and `folder` unchanged."""
    before = sorted(os.listdir(folder))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        commands.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert sorted(os.listdir(folder)) == before
    return lines[0]


def mynet_from(path, out, *flags):
    return ["convert", "--from", "mynet", str(path), "--out", str(out), "--mean", "0.5", "--std", "0.5", *flags]


@pytest.mark.parametrize("change,said", [
    (lambda sd: sd.pop("fc2.bias"), "missing fc2.bias"),
    (lambda sd: sd.update({"fc3.weight": torch.zeros(3, 3), "bn.running_mean": torch.zeros(3)}),
     "unexpected fc3.weight, bn.running_mean"),
    (lambda sd: sd.update({"conv2.weight": torch.zeros(64, 16, 3, 3)}),
     "mis-shaped conv2.weight expected (64, 32, 3, 3), found (64, 16, 3, 3)"),
])
def test_keys_are_named(change, said, state, tmp_path, capsys):
    sd = dict(state)
    change(sd)
    torch.save(sd, tmp_path / "net.pth")
    line = refused(mynet_from(tmp_path / "net.pth", tmp_path / "out"), capsys, tmp_path)
    assert f"is not a MY_NET state dict: {said}" in line


@pytest.mark.parametrize("content,said", [
    (lambda p, sd: torch.save([1, 2, 3], p), "holds a list, not a state dict"),
    (lambda p, sd: torch.save({"model": sd, "optimizer": {"lr": 1e-3}}, p), "holds a dict of dicts (model, optimizer)"),
    (lambda p, sd: torch.save({"weights": NotATensor()}, p),
     f"holds more than tensors ({NotATensor.__module__}.NotATensor), which torch.load(weights_only=True)"),
    (lambda p, sd: p.write_bytes(pickle.dumps({"w": NotATensor()})), "is not a PyTorch weights file that torch.load"),
    (lambda p, sd: p.write_text("not a pickle at all"), "is not a PyTorch weights file"),
    (lambda p, sd: torch.save({"epoch": 3}, p), "is not a state dict: epoch hold no tensors"),
])
def test_files_that_are_not_state_dicts(content, said, state, tmp_path, capsys):
    content(tmp_path / "net.pt", state)
    assert said in refused(mynet_from(tmp_path / "net.pt", tmp_path / "out"), capsys, tmp_path)


def test_not_a_safetensors_file_and_unknown_formats(tmp_path, capsys):
    (tmp_path / "net.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage!")
    assert "is not a readable safetensors file" in refused(mynet_from(tmp_path / "net.safetensors", tmp_path / "o"),
                                                            capsys, tmp_path)
    (tmp_path / "net.npz").write_bytes(b"PK")
    assert "not a weights file jaxdl reads" in refused(mynet_from(tmp_path / "net.npz", tmp_path / "o"), capsys, tmp_path)
    assert "does not exist" in refused(mynet_from(tmp_path / "nothing.pth", tmp_path / "o"), capsys, tmp_path)


def test_what_the_weights_do_not_say(state, tmp_path, capsys):
    torch.save(state, tmp_path / "net.pth")
    src, out = str(tmp_path / "net.pth"), str(tmp_path / "out")
    assert "give --mean" in refused(["convert", "--from", "mynet", src, "--out", out], capsys, tmp_path)
    assert "give 10 distinct class names" in refused(mynet_from(src, out, "--classes", "a,b"), capsys, tmp_path)
    assert "std must be positive" in refused(["convert", "--from", "mynet", src, "--out", out, "--mean", "0.5",
                                              "--std", "0"], capsys, tmp_path)
    assert "--mean takes numbers" in refused(mynet_from(src, out, "--mean", "half"), capsys, tmp_path)
    assert "--chars-from is not for --from mynet" in refused(mynet_from(src, out, "--chars-from", src), capsys, tmp_path)
    assert "unknown --from 'resnet'" in refused(["convert", "--from", "resnet", src, "--out", out], capsys, tmp_path)


def test_an_existing_out_is_left_alone(state, tmp_path, capsys):
    torch.save(state, tmp_path / "net.pth")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    assert "--out" in refused(mynet_from(tmp_path / "net.pth", tmp_path / "out"), capsys, tmp_path)
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_language_models_that_are_not_one_recurrent_stack(tmp_path, capsys):
    two = {**{f"a.{k}": v for k, v in torch.nn.GRU(4, 8).state_dict().items()},
           **{f"b.{k}": v for k, v in torch.nn.GRU(4, 8).state_dict().items()}}
    torch.save(two, tmp_path / "two.pt")
    assert "one recurrent module" in refused(["convert", "--from", "gru-lm", str(tmp_path / "two.pt"), "--out",
                                              str(tmp_path / "o")], capsys, tmp_path)
    lm = CharLM(12, "gru", 4, 8, 1).state_dict()
    torch.save(lm, tmp_path / "lm.pt")
    assert "not an nn.LSTM" in refused(["convert", "--from", "lstm-lm", str(tmp_path / "lm.pt"), "--out",
                                        str(tmp_path / "o")], capsys, tmp_path)
    (tmp_path / "lm.json").write_text('{"chars": "abc"}')
    assert "must be 12 distinct characters" in refused(["convert", "--from", "gru-lm", str(tmp_path / "lm.pt"),
                                                        "--out", str(tmp_path / "o")], capsys, tmp_path)


def test_the_way_out_refuses_what_torch_cannot_take(state, tmp_path, capsys):
    torch.save(state, tmp_path / "net.pth")
    commands.main(mynet_from(tmp_path / "net.pth", tmp_path / "run"))
    assert "name the file *.safetensors" in refused(["convert", "--to", "torch", str(tmp_path / "run"), "--out",
                                                     str(tmp_path / "net.pt")], capsys, tmp_path)
    assert "--to 'onnx'" in refused(["convert", "--to", "onnx", str(tmp_path / "run"), "--out",
                                     str(tmp_path / "x.safetensors")], capsys, tmp_path)
    assert "has no model.json" in refused(["convert", "--to", "torch", str(tmp_path), "--out",
                                           str(tmp_path / "x.safetensors")], capsys, tmp_path)
