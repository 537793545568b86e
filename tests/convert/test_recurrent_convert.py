"""torch.nn.RNN/LSTM/GRU (layers, directions) and a PyTorch character LM, both ways through
jaxdl.convert: outputs and final states within 1e-5 of PyTorch's, sizes read off the state dict."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxdl  # noqa: E402
from jaxdl import commands  # noqa: E402
from jaxdl.convert import recurrent  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.models.recurrent import Recurrent  # noqa: E402
from tests.convert.seed_torch import CharLM  # noqa: E402

torch.set_num_threads(2)
TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
B, T, D, H = 3, 6, 5, 7
TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def torch_states(cell, state):
    """torch's final state as jaxdl's carry: h (L*dirs, B, H), or (h, c) for an LSTM."""
    return tuple(s.detach().numpy() for s in state) if cell == "lstm" else state.detach().numpy()


def assert_close(got, want):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=TOLERANCE, rtol=TOLERANCE)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True), (3, False)])
def test_torch_module_both_ways(cell, layers, bidirectional):
    torch.manual_seed(layers)
    net = TORCH[cell](D, H, layers, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(B, T, D)
    with torch.no_grad():
        want_y, want_state = net(x)
    module, params = recurrent.module_from_torch(net.state_dict(), cell)
    assert (module.hidden, module.layers, module.bidirectional) == (H, layers, bidirectional)
    y, carry = module.apply(params, jnp.asarray(x.numpy()))
    assert_close(y, want_y.numpy())
    assert_close(carry, torch_states(cell, want_state))

    ours = Recurrent(cell, H, layers, bidirectional).init(jax.random.key(0), jnp.zeros((1, T, D)))
    back = TORCH[cell](D, H, layers, batch_first=True, bidirectional=bidirectional)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in recurrent.module_to_torch(module, ours).items()},
                         strict=True)
    y, carry = module.apply(ours, jnp.asarray(x.numpy()))
    with torch.no_grad():
        want_y, want_state = back(x)
    assert_close(y, want_y.numpy())
    assert_close(carry, torch_states(cell, want_state))


def test_the_wrong_cell_is_named():
    with pytest.raises(UsageError, match=r"the shape of an nn\.LSTM of hidden size 7, not an nn\.GRU"):
        recurrent.module_from_torch(torch.nn.LSTM(D, H).state_dict(), "gru")


@pytest.fixture(scope="module")
def char_lm(tmp_path_factory):
    """A PyTorch char LM whose ids follow first appearance in its text (not code-point order), saved
    with torch.save(state_dict) and its characters in lm.json beside it."""
    folder = tmp_path_factory.mktemp("char-lm")
    text = "to be, or not to be: that is the question.\n"
    chars = "".join(dict.fromkeys(text))
    torch.manual_seed(0)
    net = CharLM(len(chars), "lstm", embed_dim=8, hidden_dim=16, num_layers=2)
    torch.save(net.state_dict(), folder / "lm.pt")
    (folder / "lm.json").write_text(json.dumps({"chars": chars}))
    return net.eval(), chars, folder


def test_char_lm_logits_and_states_match(char_lm, tmp_path):
    net, chars, folder = char_lm
    out = tmp_path / "lm"
    commands.main(["convert", "--from", "lstm-lm", str(folder / "lm.pt"), "--out", str(out)])
    model = jaxdl.load(out)
    f = model.info["model"]["fields"]
    assert (f["cell"], f["embed"], f["hidden"], f["layers"], f["vocab_size"]) == ("lstm", 8, 16, 2, len(chars))
    text = "not that question"
    with torch.no_grad():
        want, state = net(torch.tensor([[chars.index(c) for c in text]]))
    ids = model.encode(text)
    logits, carry = model.model.apply(model.params, jnp.asarray(ids)[None])
    order = [chars.index(c) for c in model.tokenizer.chars]  # jaxdl's ids are in code-point order
    assert_close(logits, want.numpy()[..., order])
    assert_close(carry, torch_states("lstm", state))


def test_char_lm_round_trip(char_lm, tmp_path):
    net, chars, folder = char_lm
    commands.main(["convert", "--from", "lstm-lm", str(folder / "lm.pt"), "--out", str(tmp_path / "lm")])
    jaxdl.convert.to_torch(str(tmp_path / "lm"), str(tmp_path / "back.safetensors"))
    meta = json.loads((tmp_path / "back.json").read_text())
    assert meta["chars"] == "".join(sorted(chars)) and (meta["cell"], meta["layers"]) == ("lstm", 2)
    from safetensors.torch import load_file

    back = CharLM(len(chars), "lstm", embed_dim=8, hidden_dim=16, num_layers=2)
    renamed = {k.replace("embedding.", "embed.").replace("head.", "fc."): v
               for k, v in load_file(tmp_path / "back.safetensors").items()}
    back.load_state_dict(renamed, strict=True)
    tokens = torch.tensor([[meta["chars"].index(c) for c in "to be"]])
    original = torch.tensor([[chars.index(c) for c in "to be"]])
    order = [chars.index(c) for c in meta["chars"]]
    with torch.no_grad():
        np.testing.assert_allclose(back(tokens)[0].numpy(), net(original)[0].numpy()[..., order], atol=TOLERANCE)
    # and in again from what jaxdl wrote, with its FILE.json: the same model
    jaxdl.convert.from_torch("lstm-lm", str(tmp_path / "back.safetensors"), str(tmp_path / "again"))
    a, b = jaxdl.load(tmp_path / "again"), jaxdl.load(tmp_path / "lm")
    assert a.info["tokenizer"] == b.info["tokenizer"]
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_other_cells_and_token_id_prompts(cell, tmp_path, capsys):
    torch.manual_seed(1)
    net = CharLM(20, cell, embed_dim=4, hidden_dim=8, num_layers=1).eval()
    torch.save(net.state_dict(), tmp_path / "lm.pth")
    commands.main(["convert", "--from", f"{cell}-lm", str(tmp_path / "lm.pth"), "--out", str(tmp_path / "lm")])
    capsys.readouterr()
    commands.main(["generate", str(tmp_path / "lm"), "--prompt", "3 1 4", "--temperature", "0",
                   "--max-new-tokens", "6"])
    printed = capsys.readouterr().out.split()
    tokens = torch.tensor([[3, 1, 4]])
    with torch.no_grad():  # greedy decoding in PyTorch, carrying the state
        logits, state = net(tokens)
        want = []
        for _ in range(6):
            want.append(int(logits[0, -1].argmax()))
            logits, state = net(torch.tensor([[want[-1]]]), state)
    assert printed == ["3", "1", "4", *map(str, want)]
