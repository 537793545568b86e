"""The documentation's commands, run as a reader runs them: every ```bash, ```python and ```console
block of README.md and docs/*.md, in page order, in a fresh folder that looks like the repository root
(links to experiments/, benchmarks/, jaxdl/, ...; the reader's own `runs/` and `data/`), at tiny sizes.

How each command runs:
  python experiments/X.py ARGS     in-process X.main(ARGS + TINY[X]): later flags win, so the page's own
                                   choices stay and only the sizes shrink (the workdir name is unchanged);
                                   a run another test or page made already is copied (tests/run_store.py)
  jaxdl ARGS                       in-process jaxdl.commands.main (`jaxdl train F ...` gets TINY[F.py])
  python benchmarks/X.py ARGS      a subprocess, with --quick appended; not run where a test runs that
                                   very quick run itself: `X.py --quick` (tests/benchmarks), with ARGS
                                   only --steps/--rounds (QUICK_RUN) and no environment of its own, or a
                                   command of RUN_BY_A_TEST
  python -c CODE, python FILE.py   exec'd / run as __main__ in-process, the folder first on sys.path
  python -m pytest ARGS            a subprocess from the repository root with --collect-only: the
                                   selection must collect tests (running them is the suite's own job)
  tensorboard --logdir runs        started on a free --port; it must list every run's logs, then stops
  venv, activate, pip install      not run: `pip install -e ".[X]"` must name extras pyproject.toml has
A block with shell syntax (an env prefix, a loop, `&`, `$i`) runs whole in bash, with `python` and
`jaxdl` on PATH as this file's `__main__`, which does the same as above in its own process.

Blocks with `<!-- not run: REASON -->` above them do not run (STAND_INS may put in place what they
would have made); `<!-- file: NAME -->` above a python block saves it as NAME (FILE_TINY shrinks it);
```console blocks run their `$ ` lines, and an output that starts with `error:` must be the command's
one error line (exit status 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import json
import os
import re
import runpy
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests import run_store  # noqa: E402

PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
HANG = 900  # seconds: only a hung subprocess gets near this

# tiny sizes appended to the experiments (CNN, RNN, LM, SEQ2SEQ, DIFFUSION: see __getattr__ below)
MLP = ["--epochs", "1", "--steps-per-epoch", "5"]
TYPED_DIGITS = ["--per-font", "1", "--size", "12"]
LONG_RANGE = ["--steps", "4", "--eval-every", "2", "--hidden", "4", "--embed", "4", "--test-examples", "8",
              "--probe-examples", "2", "--batch-size", "4"]
# MyNet at its real 48x48 (MY_NET's fc1 fixes the size) for one short epoch: for docs/pytorch.md, whose
# runs/cnn goes into MY_NET with strict=True
MYNET_48 = ["--batch-size", "512", "--epochs", "1", "--log-every", "1"]
EXPERIMENTS = ("cnn", "mlp", "rnn", "transformer", "diffusion", "typed_digits", "long_range")
PAGE_TINY = {"docs/pytorch.md": {"cnn": MYNET_48}}
# python blocks saved as files, shrunk: (text, replacement), the text must be there
FILE_TINY = {"train_my_net.py": [("for step in range(100):", "for step in range(2):")]}
# the benchmarks tests/benchmarks/test_benchmarks_quick.py runs as `python benchmarks/X.py --quick`: a page's
# bare `python benchmarks/X.py` is that run (with flags or an env prefix, the page's command runs here)
QUICK_ALONE = ("accelerator.py", "cnn_vs_torch.py", "generation_speed.py", "input_pipeline.py", "lm_vs_torch.py",
               "rnn_parts.py", "rnn_vs_torch.py")
QUICK_RUN = {"steps": 6, "rounds": 2}  # what a page's --steps and --rounds become for a benchmark
# page commands a test runs itself, with its own runs in place of the page's (its PAGE_COMMAND is the key)
RUN_BY_A_TEST = {"python benchmarks/inference_speed.py --cnn runs/cnn --lstm runs/rnn-lstm":
                 "tests/inference/test_inference_benchmark.py"}
# what a command's own environment (an env prefix in a bash block) can change in a benchmark's run
RUN_ENV_PREFIXES = run_store.ENV_PREFIXES
SETUP = ("python3 -m venv", "python -m venv", ". .venv/bin/activate", "source .venv/bin/activate")


def __getattr__(name: str) -> list[str]:
    """CNN, RNN, LM, SEQ2SEQ, DIFFUSION: the tiny sizes of the session runs of tests/inference/conftest.py
    (the same programs, so the session's XLA cache compiles them once), less what names a run (--arch,
    --task); the GPT's with a batch that splits over 8 devices and a sample shorter than its context.
    Read on first use: that conftest imports the experiments, and so jax."""
    from tests.inference import conftest

    assert conftest.SEQ2SEQ[:4] == ["--arch", "seq2seq", "--task", "reverse"] and conftest.GPT[:2] == ["--arch", "lm"]
    lists = {"CNN": conftest.CNN, "RNN": conftest.RNN, "DIFFUSION": conftest.DIFFUSION, "SEQ2SEQ": conftest.SEQ2SEQ[4:],
             "LM": [*conftest.GPT[2:], "--batch-size", "8", "--sample-length", "8"]}
    if name not in lists:
        raise AttributeError(name)
    return lists[name]


def tiny(script: str, args: list[str], page: str | None = None) -> list[str]:
    """The tiny flags the tests append to `python experiments/<script>.py args` on `page`."""
    own = PAGE_TINY.get(page or "", {})
    if script in own:
        return own[script]
    this = sys.modules[__name__]
    if script == "transformer":
        archs = [a.partition("=")[2] for a in args if a.startswith("--arch=")]
        archs += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--arch"]
        return this.SEQ2SEQ if archs[-1:] == ["seq2seq"] else this.LM
    if script in ("cnn", "rnn", "diffusion"):
        return getattr(this, script.upper())
    return {"mlp": MLP, "typed_digits": TYPED_DIGITS, "long_range": LONG_RANGE}[script]


# ---------------------------------------------------------------------------------------------------
# reading the pages

@dataclasses.dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marks: dict[str, str]  # `<!-- name: value -->` (or `<!-- name -->`: "") on the lines just above

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.lang in ("bash", "python", "console") and "not run" not in self.marks and \
            "test-command" not in self.marks


def read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def blocks(page: str) -> list[Block]:
    """Every fenced block of `page`, in order."""
    lines, out, i = read(page).splitlines(), [], 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marks, k = {}, i - 1
        while k >= 0 and (c := re.match(r"^<!-- ([\w -]+?)(?::\s*(.*?))? -->$", lines[k].strip())):
            marks[c[1]] = c[2] or ""
            k -= 1
        out.append(Block(page, i + 1, m[1], "\n".join(lines[i + 1:end]) + "\n", marks))
        i = end + 1
    return out


def command_lines(text: str) -> list[str]:
    """A bash block's commands: continuations joined, comments and blank lines dropped."""
    text = text.replace("\\\n", " ")
    lines = []
    for line in text.splitlines():
        line = strip_comment(line).strip()
        if line:
            lines.append(line)
    return lines


def strip_comment(line: str) -> str:
    """`cmd   # comment` -> `cmd` (a # inside quotes stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def console_commands(text: str) -> list[tuple[str, list[str]]]:
    """A console block's (command, its output lines)."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            out.append((strip_comment(line[2:]).strip(), []))
        elif out:
            out[-1][1].append(line)
    return out


def is_shell(lines: list[str]) -> bool:
    """Whether a block needs bash: env prefixes, loops, `;`, `&`, `|`, variables (outside quotes)."""
    for line in lines:
        if re.match(r"^(for|while|if|export)\b|^[A-Z_][A-Z0-9_]*=", line):
            return True
        unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "", line).replace("&&", "")
        if re.search(r"[;&|$()<>]", unquoted):
            return True
    return False


def pip_extras(words: list[str]) -> list[str]:
    """The extras a `pip install ...` names with `-e .[a,b]` / `".[a,b]"` (the words as shlex gives them)."""
    extras = []
    for w in words:
        m = re.fullmatch(r"\.\[([\w,-]+)\]", w)
        if m:
            extras += m[1].split(",")
    return extras


def pyproject_extras() -> set[str]:
    """The names of pyproject.toml's [project.optional-dependencies]."""
    text = read("pyproject.toml")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+)\s*=", section, re.M))


def check_pip(words: list[str]) -> None:
    """A pip install line as the pages write it: only extras pyproject.toml declares, valid requirements."""
    from packaging.requirements import Requirement

    start = words.index("install") + 1
    assert words[:start] in (["pip", "install"], ["python", "-m", "pip", "install"]), words
    known = pyproject_extras()
    for w in words[start:]:
        if w in ("-e", "-q", "--upgrade", "."):
            continue
        if w.startswith(".["):
            missing = set(pip_extras([w])) - known
            assert not missing, f"pip install names extras pyproject.toml lacks: {sorted(missing)}"
        else:
            Requirement(w)  # a package spec such as torch==2.13.0


# ---------------------------------------------------------------------------------------------------
# running them

def user_folder(folder: str) -> None:
    """Make `folder` look like the repository root to the commands, with the reader's own files."""
    import numpy as np
    from PIL import Image

    from jaxdl.data.images import load_digits

    for name in ("experiments", "benchmarks", "jaxdl", "docs", "LICENSE", "pyproject.toml", "README.md"):
        os.symlink(os.path.join(ROOT, name), os.path.join(folder, name))
    # your own pictures: a digit (light on dark, as `digits`), the same on paper, and a typed seven
    digit = load_digits().test.images[0, :, :, 0]
    big = np.kron(digit, np.ones((4, 4), np.uint8))
    Image.fromarray(big).save(os.path.join(folder, "my_digit.png"))
    paper = np.full((60, 40), 230, np.uint8)
    paper[10:42, 4:36] = 255 - big
    Image.fromarray(paper).convert("RGB").save(os.path.join(folder, "photo_of_a_digit.png"))
    shutil.copy(os.path.join(folder, "my_digit.png"), os.path.join(folder, "seven.png"))


def random_gpt2(folder: str) -> None:
    """What `hf download openai-community/gpt2 ... --local-dir gpt2` leaves, from a random 2-layer GPT-2
    and a byte-level BPE tokenizer.json (no test may use the internet)."""
    import torch
    import transformers

    from tests.convert.test_gpt2_convert import bpe_tokenizer

    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, n_positions=128)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(os.path.join(folder, "gpt2"))
    bpe_tokenizer().save(os.path.join(folder, "gpt2", "tokenizer.json"))


STAND_INS = {"hf download openai-community/gpt2 ": random_gpt2}


def quick_xla_flags() -> str:
    """XLA_FLAGS with XLA:CPU's backend optimisation off: it cuts compile times, the bulk of a tiny run,
    by a quarter to a half (what a tiny run computes, and how fast, does not matter)."""
    return " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0") if f)


def subprocess_env(folder: str, page: str) -> dict[str, str]:
    """os.environ for the commands' subprocesses: the shim first on PATH, the session's XLA cache."""
    shim = os.path.join(folder, ".shim")
    if not os.path.isdir(shim):
        os.makedirs(shim)
        for name in ("python", "jaxdl"):
            path = os.path.join(shim, name)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\nexec "{sys.executable}" "{os.path.abspath(__file__)}" {name} "$@"\n')
            os.chmod(path, 0o755)
    env = {**os.environ, "PATH": shim + os.pathsep + os.environ["PATH"], "DOCS_PAGE": page, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": ROOT}
    cache = os.environ.get("JAXDL_TEST_XLA_CACHE")
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def run_subprocess(argv: list[str], cwd: str, env: dict[str, str], what: str) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG)
    print(done.stdout)
    print(done.stderr, file=sys.stderr)
    assert done.returncode == 0, f"{what}: exit status {done.returncode}\n{done.stderr[-3000:]}"
    return done.stdout


def collected(out: str) -> int:
    """How many tests a `pytest --collect-only` selected, from its output (`-q`: a count line; `-qq`:
    a count per file)."""
    per_file = re.findall(r"^\S+\.py: (\d+)$", out, re.M)
    if per_file:
        return sum(map(int, per_file))
    m = re.search(r"(\d+)(?:/\d+)? tests? collected", out)
    return int(m[1]) if m else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def serve_tensorboard(words: list[str], folder: str) -> list[str]:
    """`tensorboard --logdir DIR` on a free port: it must list the logs of every run under DIR."""
    logdir = words[words.index("--logdir") + 1]
    expected = sorted({os.path.relpath(os.path.dirname(p), os.path.join(folder, logdir))
                       for p in glob.glob(os.path.join(folder, logdir, "*", "tensorboard", "events*"))})
    assert expected, f"no run under {logdir} has TensorBoard logs"
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    server = subprocess.Popen([exe, *words[1:], "--port", str(port)], cwd=folder, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        listed, deadline = [], time.time() + 120
        while time.time() < deadline:
            assert server.poll() is None, f"tensorboard stopped: {server.stderr.read()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/data/runs", timeout=5) as r:
                    listed = json.load(r)
            except OSError:
                listed = []
            if set(expected) <= set(listed):
                return listed
            time.sleep(0.5)
        raise AssertionError(f"tensorboard listed {listed}, not every run of {expected}")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextlib.contextmanager
def folder_on_path(folder: str):
    """`python -c` and `python FILE` see the current folder first; modules imported from it are
    forgotten afterwards."""
    before = set(sys.modules)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)
        for name in set(sys.modules) - before:
            if os.path.abspath(getattr(sys.modules[name], "__file__", None) or "/").startswith(folder + os.sep):
                del sys.modules[name]


def experiment_main(script: str):
    import importlib

    return importlib.import_module(f"experiments.{script}").main


def config_of(script: str, argv: list[str], drop: tuple[str, ...] = ("--mesh",)):
    """The config `python experiments/<script>.py argv` runs with, without the flags in `drop` (by
    default --mesh, which only a machine with those devices can check; neither names the workdir)."""
    import importlib

    from jaxdl import cli

    skip = {i + d for i, a in enumerate(argv) if a in drop for d in (0, 1)}
    argv = [a for i, a in enumerate(argv) if i not in skip and not a.startswith(tuple(f"{f}=" for f in drop))]
    return cli.parse(importlib.import_module(f"experiments.{script}").Config, argv)


def run_by_a_test(words: list[str]) -> bool:
    """Whether `python benchmarks/X.py ...` (words), run quick, is a run a test makes itself."""
    if " ".join(words) in RUN_BY_A_TEST:
        return True
    if os.path.basename(words[1]) not in QUICK_ALONE:
        return False
    flags = tuple(f"--{flag}" for flag in QUICK_RUN)  # --steps N / --rounds N: the quick run's own win
    rest, i = [], 2
    while i < len(words):
        if words[i] in flags:
            i += 2
        else:
            rest += [] if words[i].startswith(tuple(f"{f}=" for f in flags)) else [words[i]]
            i += 1
    return not rest


def own_environment() -> bool:
    """In a bash block's subprocess: whether the command was given variables of its own (an env
    prefix) that can change a run, beyond the block's environment (DOCS_BLOCK_ENV)."""
    block = json.loads(os.environ.get("DOCS_BLOCK_ENV", "{}"))
    names = {k for k in [*os.environ, *block] if k.startswith(RUN_ENV_PREFIXES)}
    return any(os.environ.get(k) != block.get(k) for k in names)


def run_words(words: list[str], folder: str, page: str, where: str) -> None:
    """One command, split into words (no shell syntax), run as the module docstring says."""
    if " ".join(words).startswith(SETUP):
        return
    if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
        return check_pip(words)
    if words[0] == "python" and len(words) > 1 and words[1].startswith("experiments/"):
        script = os.path.splitext(os.path.basename(words[1]))[0]
        assert script in EXPERIMENTS and os.path.isfile(os.path.join(ROOT, words[1])), f"{where}: {words[1]}?"
        argv = words[2:] + tiny(script, words[2:], page)
        try:
            run_store.run(script, argv)
        except SystemExit as e:  # --help
            assert e.code in (0, None) and "--help" in argv, f"{where}: {' '.join(words)} exited {e.code}"
            return
        if script != "typed_digits":  # a run: its workdir, named as the page says, holds its summary
            workdir = config_of(script, argv).workdir
            assert os.path.isfile(os.path.join(folder, workdir, "summary.json")), f"{where}: no {workdir}/summary.json"
        return
    if words[0] == "python" and len(words) > 1 and words[1].startswith("benchmarks/"):
        if run_by_a_test(words):
            assert os.path.isfile(os.path.join(ROOT, words[1])), f"{where}: {words[1]}?"
            return
        env = subprocess_env(folder, page)
        run_subprocess([os.path.join(folder, ".shim", "python"), *words[1:]], folder, env, where)
        return
    if words[:2] == ["python", "-c"]:
        with folder_on_path(folder):
            exec(compile(words[2], f"{where} (python -c)", "exec"), {"__name__": "__main__"})
        return
    if words[:3] == ["python", "-m", "pytest"] or words[0] == "pytest":
        args = words[3:] if words[0] == "python" else words[1:]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not this pytest's worker
        out = run_subprocess([sys.executable, "-m", "pytest", *args, "--collect-only", "-p", "no:cacheprovider"],
                             ROOT, env, where)
        assert collected(out) > 0, f"{where}: {' '.join(words)} selects no test\n{out[-2000:]}"
        return
    if words[0] == "python" and len(words) > 1 and words[1].endswith(".py") and \
            os.path.isfile(os.path.join(folder, words[1])):
        with folder_on_path(folder):
            old_argv, sys.argv = sys.argv, words[1:]
            try:
                runpy.run_path(os.path.join(folder, words[1]), run_name="__main__")
            finally:
                sys.argv = old_argv
        return
    if words[0] == "jaxdl":
        from jaxdl import commands

        extra = tiny(words[2], words[3:], page) if words[1:2] == ["train"] and len(words) > 2 else []
        commands.main(words[1:] + extra)
        return
    if words[0] == "tensorboard":
        serve_tensorboard(words, folder)
        return
    raise AssertionError(f"{where}: the tests do not know how to run {' '.join(words)!r}")


def run_line(line: str, folder: str, page: str, where: str) -> None:
    """One line of a block without shell syntax (`a && b` runs a, then b)."""
    for part in line.split(" && "):
        start = time.perf_counter()
        run_words(shlex.split(part), folder, page, where)
        print(f"[docs]   {part[:90]}: {time.perf_counter() - start:.1f} s", file=sys.stderr)


def run_expecting_error(line: str, error: str, folder: str, page: str, where: str) -> None:
    """A console command whose shown output is one `error:` line: it must end so, with exit status 2."""
    from jaxdl import cli

    words = shlex.split(line)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            if words[0] == "python" and words[1].startswith("experiments/"):
                script = os.path.splitext(os.path.basename(words[1]))[0]
                cli.run(experiment_main(script), words[2:] + tiny(script, words[2:], page))
            else:
                run_words(words, folder, page, where)
            raise AssertionError(f"{where}: {line!r} did not fail; the page shows {error!r}")
        except SystemExit as e:
            assert e.code == 2, f"{where}: {line!r} exited {e.code}"
    assert error in err.getvalue().splitlines(), f"{where}: {line!r} said {err.getvalue()!r}, the page {error!r}"


def run_block(block: Block, folder: str) -> None:
    where = block.where
    if "not run" in block.marks:
        first = command_lines(block.text)[0] if block.lang == "bash" else ""
        for start, make in STAND_INS.items():
            if first.startswith(start):
                make(folder)
        return
    if not block.runnable:
        return
    if block.lang == "python":
        if "file" in block.marks:
            text = block.text
            for old, new in FILE_TINY.get(block.marks["file"], []):
                assert old in text, f"{where}: {block.marks['file']} no longer has {old!r}"
                text = text.replace(old, new)
            with open(os.path.join(folder, block.marks["file"]), "w", encoding="utf-8") as f:
                f.write(text)
            return
        with folder_on_path(folder):
            exec(compile(block.text, where, "exec"), {"__name__": "__main__"})
        return
    if block.lang == "console":
        for line, output in console_commands(block.text):
            if output and output[0].startswith("error:"):
                run_expecting_error(line, output[0], folder, block.page, where)
            else:
                run_line(line, folder, block.page, where)
        return
    lines = command_lines(block.text)
    if is_shell(lines):
        env = subprocess_env(folder, block.page)
        env["DOCS_BLOCK_ENV"] = json.dumps({k: v for k, v in env.items() if k.startswith(RUN_ENV_PREFIXES)})
        run_subprocess(["bash", "-e", "-c", block.text], folder, env, where)
        return
    for line in lines:
        run_line(line, folder, block.page, where)


def run_page_process(page: str, folder: str) -> str:
    """`run_page` in a process of its own (XLA's backend optimisation off, the session's XLA cache; cwd,
    modules and open TensorBoard writers left behind there); its output. Fails as the page does."""
    env = {**subprocess_env(folder, page), "XLA_FLAGS": quick_xla_flags()}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--page", page, folder], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=HANG)
    print(done.stdout)
    print(done.stderr, file=sys.stderr)
    ran = re.findall(r"^\[docs\] (\S+): [\d.]+ s$", done.stderr, re.M)
    assert done.returncode == 0, f"{page}: exit status {done.returncode}\n{done.stderr[-6000:]}"
    assert ran, f"{page} has no command to run"
    return done.stdout


def run_page(page: str, folder: str) -> list[Block]:
    """Every block of `page` in order in `folder` (made to look like the repository root first)."""
    user_folder(folder)
    ran = []
    for block in blocks(page):
        start = time.perf_counter()
        run_block(block, folder)
        if block.runnable:
            ran.append(block)
            print(f"[docs] {block.where}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return ran


# ---------------------------------------------------------------------------------------------------
# the shim: `python ...` and `jaxdl ...` inside the bash blocks

def shim(argv: list[str]) -> None:
    """`docs_harness.py python ARGS` / `docs_harness.py jaxdl ARGS`, in the folder the block runs in."""
    from jaxdl import cli

    page = os.environ.get("DOCS_PAGE", "")
    if argv[:2] == ["python", "-c"] or (argv[0] == "python" and len(argv) > 1 and argv[1].startswith("-")):
        os.execv(sys.executable, [sys.executable, *argv[1:]])
    if argv[0] == "python" and argv[1].startswith("benchmarks/"):
        if run_by_a_test(argv) and not own_environment():
            print(f"[docs] (run by a test) {' '.join(argv)}", file=sys.stderr)
            return
        os.environ["XLA_FLAGS"] = quick_xla_flags()  # a --quick figure means nothing
        # the page's --steps/--rounds are parsed, then the quick run's own win (the last of a repeated flag)
        again = [w for flag, quick in QUICK_RUN.items() if f"--{flag}" in argv for w in (f"--{flag}", str(quick))]
        sys.argv = [argv[1], *argv[2:], "--quick", *again]
        sys.path.insert(0, os.getcwd())
        runpy.run_path(argv[1], run_name="__main__")
        return
    if argv[0] == "python" and argv[1].startswith("experiments/"):
        script = os.path.splitext(os.path.basename(argv[1]))[0]
        cli.run(lambda args: run_store.run(script, list(args)), argv[2:] + tiny(script, argv[2:], page))
        return
    run_words(argv, os.getcwd(), page, f"{page} (shell)")


if __name__ == "__main__":
    if sys.argv[1] == "--page":  # run_page_process's child
        os.chdir(sys.argv[3])
        run_page(sys.argv[2], sys.argv[3])
    else:
        shim(sys.argv[1:])
