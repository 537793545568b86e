"""The benchmark scripts as a user runs them: `python benchmarks/NAME.py --quick` in a subprocess from
the repository root must exit 0 without a traceback and print its table, with finite, positive
figures that agree with each other; bad flags and a missing PyTorch end in one `error:` line and exit
status 2; every `python benchmarks/...` command shown in README.md and docs/ names a script and flags it takes.

inference_speed.py and diffusion_sampling.py need trained runs: their --quick runs are in
tests/inference/, on the tiny runs those tests share. The subprocesses share one XLA compilation
cache, so the MyNet steps accelerator.py compiles are not compiled again by cnn_vs_torch.py.
"""

import math
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from benchmarks import (accelerator, cnn_vs_torch, diffusion_sampling, generation_speed, inference_speed,
                        input_pipeline, lm_vs_torch, rnn_parts, rnn_vs_torch)
from jaxdl import cli, runtime
from tests.benchmarks.quick import HANG, ROOT, quick_env, run, run_ok

SCRIPTS = {"accelerator.py": accelerator, "cnn_vs_torch.py": cnn_vs_torch, "diffusion_sampling.py": diffusion_sampling,
           "generation_speed.py": generation_speed, "inference_speed.py": inference_speed,
           "input_pipeline.py": input_pipeline,
           "lm_vs_torch.py": lm_vs_torch, "rnn_parts.py": rnn_parts, "rnn_vs_torch.py": rnn_vs_torch}
TORCH_SCRIPTS = ("cnn_vs_torch.py", "lm_vs_torch.py", "rnn_parts.py", "rnn_vs_torch.py")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One compilation cache for all the scripts this file runs."""
    return quick_env(str(tmp_path_factory.mktemp("xla-cache")))


def number(cell: str) -> float:
    """A printed figure ("1,942", "45.5%", "0.349") as a float; it must be finite and > 0."""
    value = float(cell.replace(",", "").rstrip("%x"))
    assert math.isfinite(value) and value > 0, cell
    return value


def interval(cell: str) -> tuple[float, float]:
    """The values a printed figure may have been before it was rounded to the digits shown."""
    text = cell.replace(",", "").rstrip("%x")
    value, half = float(text), 0.5 * 10.0 ** -len(text.partition(".")[2])
    return value - half, value + half


def product_is(a: str, b: str, expected: float) -> None:
    """Two printed figures whose product must be `expected`, up to their rounding."""
    (a_lo, a_hi), (b_lo, b_hi) = interval(a), interval(b)
    assert a_lo * b_lo <= expected * (1 + 1e-9) and a_hi * b_hi >= expected * (1 - 1e-9), (a, b, expected)


def ratio_is(printed: str, numerator: str, denominator: str | None = None, scale: float = 1.0) -> None:
    """A printed figure must be numerator / denominator x scale, up to the rounding of all three."""
    (lo, hi), (n_lo, n_hi) = interval(printed), interval(numerator)
    d_lo, d_hi = interval(denominator) if denominator else (1.0, 1.0)
    assert lo <= n_hi / d_lo * scale and hi >= n_lo / d_hi * scale, (printed, numerator, denominator)


def markdown_table(out: str, first_header: str) -> dict[str, dict[str, str]]:
    """The `| first_header | ... |` table of `out` as {first cell: {header: cell}}."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    headers = [c.strip() for c in lines[start].strip("|").split("|")]
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(headers), line
        table[cells[0]] = dict(zip(headers, cells))
    return table


def aligned_table(out: str, first_header: str) -> dict[str, dict[str, str]]:
    """A space-aligned table (columns two or more spaces apart, rows up to the first line that is not
    one) whose header starts with `first_header`, as {first cell: {header: cell}}."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() and line.split()[0] == first_header)
    split = lambda line: re.split(r"\s{2,}", line.strip())
    headers = split(lines[start])
    table = {}
    for line in lines[start + 1:]:
        cells = split(line)
        if len(cells) != len(headers):
            break
        table[cells[0]] = dict(zip(headers, cells))
    return table


def test_accelerator_quick(env):
    out = run_ok("accelerator.py", ["--quick"], env)
    batch, context = accelerator.LM_QUICK["batch"], accelerator.LM_QUICK["context"]
    mynet = aligned_table(out, "row")
    assert set(mynet) == {"MyNet jaxdl", "MyNet jaxdl + augmentation"}
    for row in mynet.values():
        assert int(row["batch"]) == int(accelerator.QUICK["batch_sizes"])
        number(row["of peak"])
        assert float(row["compile s"]) >= 0  # a compile found in the shared cache takes next to nothing
        product_is(row["images/s"], row["ms/step"], 1e3 * int(row["batch"]))  # one measurement, two units
    gpt = aligned_table(out[out.index("GPT char LM"):], "row")["GPT char LM"]
    assert int(gpt["batch"]) == batch and number(gpt["MFU"]) < 100 and float(gpt["compile s"]) >= 0
    product_is(gpt["tokens/s"], gpt["ms/step"], 1e3 * batch * context)
    ratio_is(gpt["val bpc"], gpt["val loss"], scale=1 / math.log(2))  # nats -> bits, one token per character


def test_cnn_vs_torch_quick(env):
    pytest.importorskip("torch")
    out = run_ok("cnn_vs_torch.py", ["--quick"], env)
    rows = aligned_table(out, "framework")
    assert set(rows) == {"jaxdl", "PyTorch", "jaxdl + augmentation"}
    for row in rows.values():
        number(row["fraction of peak"])
        product_is(row["images/s"], row["ms/step"], 1e3 * cnn_vs_torch.QUICK["batch_size"])
    ratio = re.search(r"jax / torch throughput: (\S+)x", out)[1]
    ratio_is(ratio, rows["jaxdl"]["images/s"], rows["PyTorch"]["images/s"])
    assert f"CPU: {runtime.cpu_description()}\n" in out  # ratios depend on the CPU: every comparison names it


@pytest.mark.parametrize("script", ["lm_vs_torch.py", "rnn_vs_torch.py"])
def test_lm_against_torch_quick(script, env):
    pytest.importorskip("torch")
    out = run_ok(script, ["--quick"], env)
    quick = SCRIPTS[script].QUICK
    tokens_per_step = quick["batch_size"] * quick.get("context", quick.get("seq_len"))
    rows = markdown_table(out, "framework")
    assert set(rows) == {"jaxdl", "PyTorch"}
    for row in rows.values():
        product_is(row["tokens/s"], row["ms/step"], 1e3 * tokens_per_step)
        ratio_is(row["val bpc"], row["val loss (nats)"], scale=1 / math.log(2))
        assert float(row["page faults/step"].replace(",", "")) >= 0
    assert float(rows["jaxdl"]["compile s"]) >= 0 and rows["PyTorch"]["compile s"] == "- (eager)"
    assert f"CPU: {runtime.cpu_description()}\n" in out
    if script == "lm_vs_torch.py":  # MFU = model GFLOP/s over the measured peak (a tiny model's can print 0.0)
        peak = re.search(r"float32 matmul peak of ([\d,.]+) GFLOP/s", out)[1]
        for row in rows.values():
            ratio_is(row["MFU"], row["GFLOP/s"], peak, scale=100)
            assert interval(row["MFU"])[1] >= 0 and interval(row["MFU"])[0] < 100  # "0.0%" at --quick sizes
    # both start from the same weights and train on the same batches: torch is the reference
    assert abs(number(rows["jaxdl"]["val loss (nats)"]) - number(rows["PyTorch"]["val loss (nats)"])) <= 0.03


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_parts_quick(cell, env):
    """lstm: the page's command (the defaults); gru with 3 of the 8 steps per loop iteration."""
    pytest.importorskip("torch")
    unroll = 1 if cell == "lstm" else 3
    out = run_ok("rnn_parts.py", ["--quick"] + (["--cell", cell, "--unroll", "3"] if cell != "lstm" else []), env)
    assert f"{unroll} time step(s) per loop iteration" in out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[1] in ("jaxdl", "PyTorch"):
            rows[cells[1], cells[0]] = cells
    stack = ("stack, forward + backward", "stack, forward")
    loops = ("loop: recurrent matmuls", "loop: + the cell", "loop: + the input's slice")
    assert set(rows) == {("jaxdl", p) for p in stack + loops} | {("PyTorch", p) for p in stack}
    T, H, B = rnn_parts.QUICK["seq_len"], rnn_parts.QUICK["hidden"], rnn_parts.QUICK["batch_size"]
    gates = {"lstm": 4, "gru": 3}[cell]
    for part in loops:  # one measurement in three units: ms, us per step, GFLOP/s of the matmuls
        ms, per_step, rate = rows["jaxdl", part][2:]
        ratio_is(per_step, ms, scale=1e3 / T)
        ratio_is(rate, f"{2 * B * H * gates * H * T}", ms, scale=1e-6)
    for part in stack:
        ratio = re.search(rf"jaxdl / PyTorch speed, {re.escape(part)}: (\S+)x", out)[1]
        ratio_is(ratio, rows["PyTorch", part][2], rows["jaxdl", part][2])
    assert f"CPU: {runtime.cpu_description()}\n" in out


def test_generation_speed_quick(env):
    out = run_ok("generation_speed.py", ["--quick"], env)
    rows = {name.split(" (")[0]: row for name, row in markdown_table(out, "method").items()}
    assert set(rows) == {"cached", "uncached"}
    for row in rows.values():
        number(row["first call s (compile + run)"])
        product_is(row["tokens/s"], row["ms/step"], 1e3)  # batch 1: ms per token x tokens per ms
    ratio = re.search(r"cached / uncached tokens/s: (\S+)x", out)[1]
    ratio_is(ratio, rows["cached"]["tokens/s"], rows["uncached"]["tokens/s"])
    assert re.search(r"same greedy tokens: (yes|no)", out)


def test_input_pipeline_quick(env):
    out = run_ok("input_pipeline.py", ["--quick"], env)
    rows = aligned_table(out, "experiment")
    assert set(rows) == {"mlp"}
    row = rows["mlp"]
    ratio_is(row["ratio"], row["pipeline"], row["in memory"])
    assert row["unit, command"] == "examples/s, experiments/mlp.py --task xor --epochs 3"


BAD_FLAGS = [  # (script, flags, what the error line names)
    ("accelerator.py", ["--batch-sizes", "8,x"], "--batch-sizes"),
    ("cnn_vs_torch.py", ["--image-size", "10"], "multiple of 4"),
    ("diffusion_sampling.py", ["--sample-steps", "0"], "--sample-steps"),
    ("generation_speed.py", ["--quick", "--heads", "3"], "must divide --d-model 16"),
    ("inference_speed.py", ["--images", "0"], "--images"),
    ("input_pipeline.py", ["--only", "mlp,vgg"], "vgg"),
    ("lm_vs_torch.py", ["--quick", "--steps", "2"], "--steps must be at least --rounds + 1"),
    ("rnn_vs_torch.py", ["--cell", "transformer"], "--cell"),
    ("rnn_parts.py", ["--quick", "--hidden", "0"], "--hidden must be at least 1"),
]


@pytest.mark.parametrize("script,flags,named", BAD_FLAGS)
def test_bad_flags_one_line_exit_2(script, flags, named, env):
    done = run(script, flags, env)
    err = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in err and err.startswith("error: ") and named in err, done.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_flag_one_line_exit_2(script, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(SCRIPTS[script].main, ["--no-such-flag"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and err.startswith("error: ") and "--no-such-flag" in err


@pytest.mark.parametrize("script", TORCH_SCRIPTS)
def test_without_torch_one_line_exit_2(script, env):
    """torch made unimportable in the script's process: it stops before any work."""
    path = os.path.join("benchmarks", script)
    code = (f"import runpy, sys; sys.modules['torch'] = None; sys.argv = [{path!r}, '--quick']; "
            f"runpy.run_path({path!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=HANG)
    err = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in err and err.startswith("error: ") and "PyTorch" in err, done.stderr
    assert done.stdout == ""


def readme_commands() -> list[list[str]]:
    """Every `python benchmarks/...` of README.md and docs/*.md (tests/docs runs them with --quick)."""
    pages = [os.path.join(ROOT, "README.md"), *sorted(pathlib.Path(ROOT, "docs").glob("*.md"))]
    text = "\n".join(open(page, encoding="utf-8").read() for page in pages)
    return [shlex.split(m) for m in re.findall(r"python (benchmarks/[^`\n#]*)", text)]


def test_readme_benchmark_commands_parse():
    """Each `python benchmarks/...` in the README and docs/: a runnable script here, its flags accepted as written."""
    commands = readme_commands()
    assert len(commands) >= 5
    for words in commands:
        script = os.path.basename(words[0])
        assert script in SCRIPTS and os.path.exists(os.path.join(ROOT, words[0])), words
        SCRIPTS[script].parse_args(words[1:])  # a UsageError here names the flag the README gets wrong


def test_every_runnable_script_is_covered():
    """A new runnable benchmark must join SCRIPTS (and get a --quick test): libraries have no __main__."""
    folder = pathlib.Path(ROOT, "benchmarks")
    runnable = {f.name for f in folder.glob("*.py") if '__name__ == "__main__"' in f.read_text(encoding="utf-8")}
    assert runnable == set(SCRIPTS)
    for module in SCRIPTS.values():
        assert module.parse_args(["--quick"]).quick
