"""Hugging Face GPT-2 <-> jaxdl's DecoderLM, with a small random GPT2LMHeadModel (no downloads): jaxdl's logits
match transformers', greedy generation matches `model.generate` token for token (through a byte-level BPE
tokenizer.json and through bare ids), the original hub layout (no `transformer.` prefix, mask buffers) converts
too, the way back loads with GPT2LMHeadModel.from_pretrained and reproduces the logits (also for a run jaxdl
initialised), and what jaxdl cannot follow is refused in one line, leaving nothing behind."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

import jaxdl  # noqa: E402
import jaxdl.convert  # noqa: E402
from jaxdl import commands  # noqa: E402
from jaxdl.convert import gpt2  # noqa: E402
from jaxdl.convert.workdir import Converted, write  # noqa: E402
from jaxdl.errors import UsageError  # noqa: E402
from jaxdl.models.transformer import DecoderLM  # noqa: E402
from jaxdl.tasks.run_info import language_model_info  # noqa: E402
from tests.experiments.workdir import exits_2  # noqa: E402

torch.set_num_threads(2)
transformers.logging.set_verbosity_error()
V, D, LAYERS, HEADS, P = 1000, 64, 2, 4, 128
TOLERANCE = 1e-4  # logits, absolute (they are O(1..10)): float32 sums in another order
PROMPT = "ROMEO: But soft, what light"


def bpe_tokenizer():
    """A byte-level BPE (GPT-2's kind) of exactly V tokens, trained on the embedded Shakespeare."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from jaxdl.data.text import embedded_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=V, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([embedded_text()[:60000]], trainer)
    assert tok.get_vocab_size() == V
    return tok


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """(model, folder, tokenizer): a random GPT-2 with every weight moved off its init (LayerNorm scales off 1,
    biases off 0, so a dropped or swapped one shows), saved by save_pretrained; folder/bpe holds it again with a
    tokenizer.json."""
    root = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=LAYERS, n_head=HEADS, n_embd=D, vocab_size=V, n_positions=P,
                                     bos_token_id=None, eos_token_id=None)  # generate never stops early
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(root / "plain")
    tok = bpe_tokenizer()
    shutil.copytree(root / "plain", root / "bpe")
    tok.save(str(root / "bpe" / "tokenizer.json"))
    return model, root, tok


@pytest.fixture(scope="module")
def converted(hf, tmp_path_factory):
    """The plain folder (ids tokenizer) and the bpe one, converted."""
    _, root, _ = hf
    out = tmp_path_factory.mktemp("runs")
    return {name: jaxdl.convert.from_torch("gpt2", str(root / name), str(out / name)) for name in ("plain", "bpe")}


def torch_logits(model, tokens_BT):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens_BT), dtype=torch.long)).logits.numpy()


def torch_greedy(model, ids, n=32):
    with torch.no_grad():
        out = model.generate(torch.tensor([list(ids)]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=n, pad_token_id=0)
    return out[0, len(ids):].tolist()


def generate(workdir, prompt, capsys, n=32):
    capsys.readouterr()
    commands.main(["generate", str(workdir), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", str(n)])
    return capsys.readouterr().out


def test_logits_match_transformers(hf, converted):
    """3 sequences over the whole context (every position embedding used), within 1e-4; the model.json fields."""
    model, _, _ = hf
    tokens = np.random.default_rng(0).integers(0, V, (3, P))
    lm = jaxdl.load(converted["plain"])
    fields = lm.info["model"]["fields"]
    assert (fields["gelu"], fields["tie_embeddings"], fields["fast_variance"], fields["max_len"]) == ("tanh", True,
                                                                                                       False, P)
    diff = np.abs(lm.logits(tokens) - torch_logits(model, tokens)).max()
    print(f"max |logit difference| {diff:.3g}")
    assert diff < TOLERANCE


def test_the_param_tree_is_decoder_lms_own(hf):
    """Names, shapes (scanned layer axis) and dtypes are exactly what DecoderLM.init makes."""
    _, root, _ = hf
    config, _ = gpt2.read_config(str(root / "plain"))
    lm = gpt2.model_of(config, "config.json")
    params = gpt2.params_from_state_dict(load_file(str(root / "plain" / "model.safetensors")), lm, gpt2.PREFIX)
    want = jax.eval_shape(lm.init, jax.random.key(0), np.zeros((1, 4), np.int32))
    assert jax.tree.structure(params) == jax.tree.structure(want)
    pairs = zip(jax.tree.leaves(params), jax.tree.leaves(want))
    assert all(a.shape == b.shape and a.dtype == b.dtype for a, b in pairs)


def test_greedy_generation_with_token_ids(hf, converted, capsys):
    """`jaxdl generate --prompt "1 2 3"` prints the prompt, then transformers' 32 greedy ids, space-separated."""
    model, _, _ = hf
    expected = "1 2 3 " + " ".join(map(str, torch_greedy(model, [1, 2, 3]))) + "\n"
    assert generate(converted["plain"], "1 2 3", capsys) == expected


@pytest.mark.parametrize("prompt,message", [("1 two 3", "not 'two'"), ("1 1000", "token id 1000 is out of range"),
                                            ("-1", "not '-1'")])
def test_bad_id_prompts_exit_2(converted, prompt, message, capsys):
    argv = ["generate", str(converted["plain"]), "--prompt", prompt, "--temperature", "0"]
    assert message in exits_2(commands.main, argv, capsys)


def test_greedy_generation_through_the_tokenizer(hf, converted, capsys):
    """The tokenizer.json travels with the run; `jaxdl generate` encodes the prompt with it, and its continuation
    is transformers' greedy one decoded by the same tokenizer."""
    model, root, tok = hf
    workdir = converted["bpe"]
    tokenizer = jaxdl.load(workdir).info["tokenizer"]
    assert tokenizer == {"kind": "huggingface", "file": "tokenizer.hf.json", "vocab_size": V}
    with open(os.path.join(workdir, "tokenizer.hf.json")) as f, open(root / "bpe" / "tokenizer.json") as g:
        assert f.read() == g.read()
    ids = tok.encode(PROMPT).ids
    new = torch_greedy(model, ids)
    assert generate(workdir, PROMPT, capsys) == PROMPT + tok.decode(new) + "\n"


def test_original_hub_layout_converts_the_same(hf, converted, tmp_path):
    """Keys without `transformer.` (GPT2Model's), the causal-mask buffers attn.bias / attn.masked_bias of older
    files, no lm_head, in a pickled pytorch_model.bin: the same params as the save_pretrained folder's."""
    model, root, _ = hf
    src = tmp_path / "hub"
    src.mkdir()
    shutil.copy(root / "plain" / "config.json", src / "config.json")
    state = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    for i in range(LAYERS):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(P, P, dtype=torch.bool)).view(1, 1, P, P)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, src / "pytorch_model.bin")
    hub = jaxdl.load(jaxdl.convert.from_torch("gpt2", str(src), str(tmp_path / "run")))
    same = jax.tree.map(np.array_equal, hub.params, jaxdl.load(converted["plain"]).params)
    assert all(jax.tree.leaves(same))


def test_round_trip_to_transformers(hf, converted, tmp_path):
    """to_torch of the converted run -> GPT2LMHeadModel.from_pretrained gives the original's logits; the
    tokenizer.json comes back; config.json says gelu_new and tied embeddings, and the file has no lm_head."""
    model, _, tok = hf
    files = jaxdl.convert.to_torch(converted["bpe"], str(tmp_path / "back"))
    assert sorted(os.path.basename(f) for f in files) == ["config.json", "model.safetensors", "tokenizer.json"]
    config = json.load(open(tmp_path / "back" / "config.json"))
    assert (config["activation_function"], config["tie_word_embeddings"]) == ("gelu_new", True)
    assert "lm_head.weight" not in load_file(str(tmp_path / "back" / "model.safetensors"))
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    tokens = np.random.default_rng(1).integers(0, V, (2, 40))
    np.testing.assert_allclose(torch_logits(back, tokens), torch_logits(model, tokens), rtol=0, atol=1e-6)
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(tmp_path / "back" / "tokenizer.json")).encode(PROMPT).ids == tok.encode(PROMPT).ids


def _jaxdl_run(tmp_path, **fields):
    """A workdir of a GPT-2-shaped DecoderLM jaxdl initialised (numpy draws, no compile), ids tokenizer."""
    model = DecoderLM(50, d_model=32, num_layers=2, num_heads=4, max_len=24, **fields)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 4), np.int32))
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
    if "head" in params["params"]:
        params["params"]["head"]["bias"] = np.zeros_like(params["params"]["head"]["bias"])
    info = language_model_info(model, params, {"kind": "ids", "vocab_size": 50}, "test", "0")
    write(str(tmp_path / "run"), Converted(info, params), "test")
    return str(tmp_path / "run")


def test_export_of_a_jaxdl_initialised_run(tmp_path):
    """Untied (lm_head written), exact GELU (activation "gelu"), unscanned layers: transformers reproduces jaxdl's
    logits; a nonzero head bias and an option GPT-2 lacks (rope) are refused, naming why, writing nothing."""
    workdir = _jaxdl_run(tmp_path, scan=False)
    jaxdl.convert.to_torch(workdir, str(tmp_path / "hf"))
    config = json.load(open(tmp_path / "hf" / "config.json"))
    assert (config["activation_function"], config["tie_word_embeddings"]) == ("gelu", False)
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    tokens = np.random.default_rng(2).integers(0, 50, (2, 24))
    diff = np.abs(jaxdl.load(workdir).logits(tokens) - torch_logits(back, tokens)).max()
    assert diff < TOLERANCE
    trained = jaxdl.load(workdir)
    params = jax.tree.map(np.array, trained.params)
    params["params"]["head"]["bias"][3] = 0.5
    with pytest.raises(UsageError, match="bias"):
        gpt2.export_directory(dataclasses.replace(trained, params=params), str(tmp_path / "biased"))
    with pytest.raises(UsageError, match="pos='rope'"):
        gpt2.export_directory(dataclasses.replace(trained, model=trained.model.clone(pos="rope")), str(tmp_path / "r"))
    with pytest.raises(UsageError, match="exists"):
        jaxdl.convert.to_torch(workdir, str(tmp_path / "hf"))
    assert not os.path.exists(tmp_path / "biased") and not os.path.exists(tmp_path / "r")


@pytest.mark.parametrize("change,named", [
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx is true"),
    ({"add_cross_attention": True}, "add_cross_attention is true"),
    ({"scale_attn_weights": False}, "scale_attn_weights is false"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon is 1e-06"),
    ({"n_inner": 100}, "n_inner is 100, not a multiple of n_embd 64"),
    ({"activation_function": "relu"}, "activation_function is 'relu'"),
    ({"model_type": "gpt_neo"}, "model_type 'gpt_neo'")])
def test_unsupported_config_fields_are_refused(hf, tmp_path, change, named, capsys):
    """One line naming the field (exit 2 through the CLI's runner), and no workdir."""
    _, root, _ = hf
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(root / "plain" / "model.safetensors", src / "model.safetensors")
    config = json.load(open(root / "plain" / "config.json"))
    json.dump({**config, **change}, open(src / "config.json", "w"))
    out = tmp_path / "out"
    err = exits_2(lambda argv: jaxdl.convert.from_torch("gpt2", str(src), str(out)), [], capsys)
    assert named in err
    assert not os.path.exists(out)


def test_misshaped_and_missing_keys_are_named(hf, tmp_path):
    """Each problem by its name in the file, a shape with what was expected and found."""
    model, root, _ = hf
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(root / "plain" / "config.json", src / "config.json")
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state["transformer.h.1.attn.c_attn.weight"] = state["transformer.h.1.attn.c_attn.weight"][:, :-1].clone()
    del state["transformer.ln_f.bias"]
    torch.save(state, src / "pytorch_model.bin")
    with pytest.raises(UsageError) as e:
        jaxdl.convert.from_torch("gpt2", str(src), str(tmp_path / "out"))
    message = str(e.value)
    assert "\n" not in message and "missing transformer.ln_f.bias" in message
    assert "transformer.h.1.attn.c_attn.weight expected (64, 192), found (64, 191)" in message
    assert not os.path.exists(tmp_path / "out")


def test_a_head_that_differs_from_wte_converts_untied(hf, tmp_path):
    """config.json ties, the file's lm_head.weight differs: transformers keeps them apart, and so does jaxdl."""
    model, root, _ = hf
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(root / "plain" / "config.json", src / "config.json")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"] + 0.1 * torch.randn(V, D)
    torch.save(state, src / "pytorch_model.bin")
    lm = jaxdl.load(jaxdl.convert.from_torch("gpt2", str(src), str(tmp_path / "run")))
    assert lm.info["model"]["fields"]["tie_embeddings"] is False
    theirs = transformers.GPT2LMHeadModel.from_pretrained(src).eval()
    tokens = np.arange(20)[None]
    assert np.abs(lm.logits(tokens) - torch_logits(theirs, tokens)).max() < TOLERANCE
