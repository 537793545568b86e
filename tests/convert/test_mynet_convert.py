"""The seed's MY_NET, trained a few steps in PyTorch and saved with torch.save(state_dict), through
`jaxdl convert`: jaxdl's logits match PyTorch's, `jaxdl predict` gives PyTorch's answers, `--init-from`
fine-tunes from it, and the way back loads into MY_NET with strict=True and reproduces the logits."""

import json
import os


import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

import jaxdl  # noqa: E402
import jaxdl.convert  # noqa: E402
from jaxdl import commands  # noqa: E402
from jaxdl.data.augment import ImagePreprocess  # noqa: E402
from jaxdl.data.images import load_digits  # noqa: E402
from tests.convert.seed_torch import MY_NET  # noqa: E402

torch.set_num_threads(2)
TOLERANCE = 1e-4  # logits, relative to their largest magnitude (float32 sums in another order)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def torch_inputs(images_NHWC, mean, std):
    """What jaxdl's classifier computes from uint8 images (48x48, 3 channels, normalised), as NCHW."""
    x = ImagePreprocess(48, 3, tuple(mean), tuple(std)).eval(images_NHWC)
    return torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def trained_in_torch(tmp_path_factory, digits):
    """MY_NET after 3 Adam steps (lr 1e-3, weight decay 1e-4, dropout on), saved as the seed saves it."""
    folder = tmp_path_factory.mktemp("torch")
    torch.manual_seed(0)
    net = MY_NET(num_classes=10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch_inputs(digits.train.images[:96], digits.mean, digits.std)
    y = torch.tensor(digits.train.labels[:96], dtype=torch.long)
    net.train()
    for step in range(3):
        loss = torch.nn.functional.cross_entropy(net(x[32 * step:32 * step + 32]), y[32 * step:32 * step + 32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    path = folder / "my_net.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture(scope="module")
def converted(trained_in_torch, digits, tmp_path_factory):
    _, path = trained_in_torch
    out = tmp_path_factory.mktemp("jax") / "from-torch"
    commands.main(["convert", "--from", "mynet", str(path), "--out", str(out), "--mean", str(digits.mean[0]),
                   "--std", str(digits.std[0]), "--data-size", "8", "--data-channels", "1"])
    return out


def max_relative(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(1.0, np.abs(np.asarray(b)).max()))


def test_logits_match_pytorch(trained_in_torch, converted, digits):
    net, _ = trained_in_torch
    images = digits.test.images[:64]
    model = jaxdl.load(converted)
    assert model.info["model"]["fields"] == {"num_classes": 10, "image_size": 48, "in_channels": 3, "pool": "max",
                                             "dropout_rate": 0.5, "norm": "none"}
    with torch.no_grad():
        want = net(torch_inputs(images, digits.mean, digits.std)).numpy()
    got = model.logits(images)
    assert max_relative(got, want) < TOLERANCE
    assert np.abs(want).max() > 0.05  # trained weights, not zeros: the comparison means something


def test_predict_gives_pytorchs_answers(trained_in_torch, converted, digits, tmp_path, capsys):
    from PIL import Image

    net, _ = trained_in_torch
    images = digits.test.images[:6]
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(image[..., 0]).save(paths[-1])
    capsys.readouterr()
    commands.main(["predict", str(converted), *paths, "--json", "--top-k", "1"])
    answers = [json.loads(line)["index"] for line in capsys.readouterr().out.splitlines()]
    with torch.no_grad():
        want = net(torch_inputs(images, digits.mean, digits.std)).argmax(1).tolist()
    assert answers == want


def test_round_trip_loads_strictly_and_reproduces_logits(trained_in_torch, converted, digits, tmp_path, capsys):
    net, _ = trained_in_torch
    out = tmp_path / "back.safetensors"
    commands.main(["convert", "--to", "torch", str(converted), "--out", str(out)])
    assert f"wrote {out}, {tmp_path / 'back.json'}" in capsys.readouterr().out
    back = MY_NET(num_classes=10)
    back.load_state_dict(load_file(out), strict=True)
    back.eval()
    for name, tensor in net.state_dict().items():  # float32 moved and permuted, never rounded: bit for bit
        assert torch.equal(back.state_dict()[name], tensor), name
    x = torch_inputs(digits.test.images[:8], digits.mean, digits.std)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
    meta = json.loads((tmp_path / "back.json").read_text())
    assert meta["classes"] == [str(i) for i in range(10)] and meta["data_size"] == [8, 8]
    again = tmp_path / "again"  # FILE.json beside the weights: no flags needed the second time
    commands.main(["convert", "--from", "mynet", str(out), "--out", str(again)])
    assert jaxdl.load(again).info["classifier"] == jaxdl.load(converted).info["classifier"]


def test_fine_tuning_starts_from_the_converted_weights(converted, capsys):
    """What `--init-from WORKDIR` does first (experiments/cnn.py calls warm_start with its fresh params)."""
    import jax

    from jaxdl.models.cnn import MyNet
    from jaxdl.train.warm_start import warm_start

    model = jaxdl.load(converted)
    fresh = MyNet(num_classes=10).init(jax.random.key(1), np.zeros((1, 48, 48, 3), np.float32))
    started = warm_start(str(converted), fresh, model.info)
    assert f"Initialised from {converted} (step 0): 10 of 10 arrays whole" in capsys.readouterr().out
    for a, b in zip(jax.tree.leaves(started), jax.tree.leaves(model.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_class_names_and_a_json_beside_the_weights(trained_in_torch, digits, tmp_path):
    _, path = trained_in_torch
    src = tmp_path / "net.pth"
    src.write_bytes(path.read_bytes())
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (tmp_path / "net.json").write_text(json.dumps({"classes": names, "mean": [0.5], "std": [0.25]}))
    jaxdl.convert.from_torch("mynet", str(src), str(tmp_path / "named"), std=[0.3])  # a flag wins over the file
    c = jaxdl.load(tmp_path / "named").info["classifier"]
    assert c["class_names"] == names and c["mean"] == [0.5] and c["std"] == [0.3]
    assert sorted(os.listdir(tmp_path)) == ["named", "net.json", "net.pth"]  # nothing else, no partial dir
