"""The pages as text: a short front page with the two commands CI and a newcomer rely on, every page
linked and linking back, every relative link and picture there, every block either run by the page
tests or marked with its reason, pip lines that name real extras, commands that do not clash over a
workdir, and every command quoted in the prose also in a block that runs."""

import collections
import dataclasses
import os
import re
import shlex
import subprocess

import pytest

from tests.docs import docs_harness as h
from tests.docs import test_docs_families, test_docs_tools, test_docs_use

DOCS = [p for p in h.PAGES if p.startswith("docs/")]
INLINE_COMMANDS = ("python experiments/", "python benchmarks/", "python -m pytest", "pytest ", "jaxdl ",
                   "tensorboard ")


def test_front_page_fits_two_screens():
    lines = h.read("README.md").splitlines()
    assert len(lines) <= 100, f"README.md has {len(lines)} lines: move some to docs/"


def test_ci_finds_the_test_command_two_lines_after_its_marker():
    """.ci/run's own awk picks the line two after `<!-- test-command -->`: the fenced test command."""
    awk = subprocess.run(["awk", "/<!-- test-command -->/{getline; getline; print; exit}", "README.md"], cwd=h.ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert awk == ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && '
                   "python -m pytest -q -n 2 --dist loadgroup")
    assert [b for b in h.blocks("README.md") if "test-command" in b.marks][0].text.strip() == awk


def test_front_page_starts_with_the_setup_command():
    first = next(b for b in h.blocks("README.md") if b.lang == "bash")
    assert first.text.strip() == "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && " \
                                 "python experiments/cnn.py"


def test_every_page_has_a_summary_and_a_way_back_and_the_front_page_links_it():
    front = h.read("README.md")
    for page in DOCS:
        lines = h.read(page).splitlines()
        assert lines[0].startswith("# ") and lines[1] == "", page
        summary = lines[2:lines.index("", 2)]
        assert summary and "[Back to the front page](../README.md)" in " ".join(summary), page
        assert f"]({page})" in front, f"README.md does not link {page}"


def markdown_links(page: str) -> list[str]:
    """Relative link and picture targets of a page (markdown and <img src>), outside code."""
    text = re.sub(r"```.*?```", "", h.read(page), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<img [^>]*src=\"([^\"]+)\"", text)
    return [t for t in targets if not re.match(r"^[a-z]+:", t)]


def anchors(page: str) -> set[str]:
    """GitHub's anchors for a page's headings."""
    text = re.sub(r"```.*?```", "", h.read(page), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", m.strip().lower()).replace(" ", "-")
            for m in re.findall(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("page", h.PAGES)
def test_relative_links_and_pictures_exist(page):
    links = markdown_links(page)
    assert links or page == "docs/architecture.md" or page == "docs/tests.md"
    for target in links:
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(h.ROOT, os.path.dirname(page), path)) if path else \
            os.path.join(h.ROOT, page)
        assert os.path.exists(full), f"{page}: {target} is not there"
        if anchor:
            assert full.endswith(".md") and anchor in anchors(os.path.relpath(full, h.ROOT)), f"{page}: {target}"


def test_every_picture_carries_a_machine_a_date_and_its_command():
    """A picture's caption, the paragraph just before it, names the machine and the date, and the
    command that draws it is in its section, before it."""
    for page in h.PAGES:
        full = h.read(page)
        text = re.sub(r"```.*?```", "", full, flags=re.S)
        for m in re.finditer(r"^!\[[^\]]*\]\(([^)]+)\)", text, re.M):
            before = text[:m.start()].rstrip().rsplit("\n\n", 1)[-1]
            assert re.search(r"\b20\d\d-\d\d-\d\d\b", before) and re.search(r"EPYC|H200|CPU", before), \
                f"{page}: {m[1]}: the caption says no machine and date"
            section = full[:full.index(m[0])].rsplit("\n#", 1)[-1]
            assert re.search(r"python experiments/|jaxdl ", section), f"{page}: {m[1]}: no command before it"
        for m in re.finditer(r"^\|.*<img [^>]*src=\"([^\"]+)\"[^|]*\|", text, re.M):  # the front page's table
            row = m[0]
            assert re.search(r"\b20\d\d-\d\d-\d\d\b", row) and re.search(r"EPYC|H200|CPU", row), row


def test_blocks_are_run_or_say_why_not():
    """Each fenced block is a command block the page tests run, a marked one with its reason, or plain
    text (output, a tree); few are not run."""
    not_run = []
    for page in h.PAGES:
        for block in h.blocks(page):
            assert block.lang in ("bash", "python", "console", ""), f"{block.where}: ```{block.lang}"
            if "not run" in block.marks:
                assert len(block.marks["not run"]) >= 15, f"{block.where}: `not run` needs its reason"
                assert block.lang == "bash", block.where
                not_run.append(block)
            unknown = set(block.marks) - {"not run", "test-command", "file"}
            assert not unknown, f"{block.where}: unknown markers {unknown}"
    assert 1 <= len(not_run) <= 6, [b.where for b in not_run]


def test_markers_with_a_misspelt_name_are_caught():
    """The marker parser reads what the pages write (a `not run` without a reason fails the test above)."""
    page = "docs/pytorch.md"
    marked = [b for b in h.blocks(page) if "not run" in b.marks]
    assert marked and all(b.marks["not run"].startswith("downloads") for b in marked)


def all_blocks():
    return [b for page in h.PAGES for b in h.blocks(page)]


def pip_lines():
    """Every `pip install ...` in a bash block, run or not (inside a quoted remote command too)."""
    for block in all_blocks():
        if block.lang == "bash":
            for args in re.findall(r"pip install ([^&'\n]*)", block.text):
                yield block, ["pip", "install", *shlex.split(h.strip_comment(args))]


def test_pip_installs_name_extras_that_pyproject_declares():
    seen = set()
    for block, words in pip_lines():
        h.check_pip(words)
        seen.update(h.pip_extras(words))
    assert {"test", "cuda", "cuda13", "tpu", "tensorboard"} <= seen


def test_check_pip_refuses_an_unknown_extra():
    with pytest.raises(AssertionError, match="nosuchextra"):
        h.check_pip(["pip", "install", "-e", ".[test,nosuchextra]"])


def test_install_page_names_every_extra():
    text = h.read("docs/install.md")
    for extra in h.pyproject_extras():
        assert f"`{extra}`" in text, f"docs/install.md does not name the extra {extra}"
    for section in ("## CPU", "## NVIDIA GPU", "## Cloud TPU"):
        assert section in text


def experiment_commands(page: str):
    """(block, script, args) of every `python experiments/...` a page's runnable blocks run (an
    expected error excluded), env prefixes dropped."""
    for block in h.blocks(page):
        if not block.runnable or block.lang == "python":
            continue
        if block.lang == "console":
            lines = [line for line, out in h.console_commands(block.text) if not out or not out[0].startswith("error:")]
        else:
            lines = h.command_lines(block.text)
        for line in lines:
            for part in line.split(" && "):
                m = re.search(r"(?:^|\s)python (experiments/\w+\.py)(.*)$", part)
                if m and "$" not in m[2]:
                    yield block, os.path.splitext(os.path.basename(m[1]))[0], shlex.split(m[2])


@pytest.mark.parametrize("page", h.PAGES)
def test_a_page_commands_do_not_clash_over_a_workdir(page):
    """Two runs of a page in one workdir must differ only in what a resume may change (length,
    cadence, what is sampled): anything else would be refused, or resume the other's run."""
    runs = collections.defaultdict(list)
    for block, script, args in experiment_commands(page):
        if script == "typed_digits" or "--help" in args:
            continue
        config = h.config_of(script, args, drop=("--mesh", "--init-from"))
        runs[config.workdir].append((block.where, config))
    for workdir, configs in runs.items():
        (where, first), rest = configs[0], configs[1:]
        for other_where, other in rest:
            for field in dataclasses.fields(first):
                if getattr(first, field.name) != getattr(other, field.name):
                    assert field.metadata.get("resume") in ("free", "length"), \
                        f"{other_where} writes {workdir}, as {where} does, with another --{field.name}"


def test_the_clash_check_sees_a_clash():
    a = h.config_of("rnn", [])
    b = h.config_of("rnn", ["--dropout", "0"])
    assert a.workdir == b.workdir and a.dropout != b.dropout  # the recurrent page gives it its own --workdir


def block_commands() -> list[list[str]]:
    """Every command line of every bash and console block, as words."""
    out = []
    for block in all_blocks():
        if block.lang == "bash":
            lines = h.command_lines(block.text)
        elif block.lang == "console":
            lines = [line for line, _ in h.console_commands(block.text)]
        else:
            continue
        for line in lines:
            line = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", line)
            for part in line.split(" && "):
                try:
                    out.append(shlex.split(part))
                except ValueError:
                    pass
    return out


def test_commands_in_the_prose_are_in_blocks_that_run():
    """`python experiments/...`, `jaxdl ...` and the like quoted in a sentence: each is the start of a
    command in some block, so the page tests run it (or it is marked not run, with its reason)."""
    commands = block_commands()
    for page in h.PAGES:
        text = re.sub(r"```.*?```", "", h.read(page), flags=re.S)
        for span in re.findall(r"`([^`\n]+)`", text):
            if not span.startswith(INLINE_COMMANDS) or span in ("jaxdl ", "pytest "):
                continue
            words = shlex.split(span)
            assert any(c[:len(words)] == words for c in commands), f"{page}: `{span}` is in no command block"


def test_every_page_is_run_by_one_page_test():
    run = [*test_docs_use.PAGES, *test_docs_families.PAGES, *test_docs_tools.PAGES]
    assert sorted(run) == sorted(h.PAGES) and len(run) == len(set(run))


def test_console_and_bash_parsing():
    assert [ln.split() for ln in h.command_lines("a \\\n  b  # c\n\n# d\n")] == [["a", "b"]]
    assert h.strip_comment("x '# y'  # z") == "x '# y'  "
    assert h.is_shell(["XLA_FLAGS=1 python x"]) and h.is_shell(["for i in 0 1; do"])
    assert not h.is_shell(["python -c 'import a; print(a)'"]) and not h.is_shell(["a && b"])
    assert h.console_commands("$ a  # c\nout\n$ b\n") == [("a", ["out"]), ("b", [])]
    assert h.tiny("transformer", ["--arch", "seq2seq"]) == h.SEQ2SEQ and h.tiny("transformer", []) == h.LM
    assert h.tiny("cnn", [], "docs/pytorch.md") == h.MYNET_48


def test_a_failing_or_unknown_command_fails_its_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):  # jaxdl's one error line and exit status 2
        h.run_block(h.Block("x.md", 1, "bash", "jaxdl info runs/nothing-here\n", {}), str(tmp_path))
    with pytest.raises(AssertionError, match="do not know how to run"):
        h.run_block(h.Block("x.md", 1, "bash", "make everything\n", {}), str(tmp_path))
    with pytest.raises(AssertionError, match="exit status"):  # a shell block, through the shim
        h.run_block(h.Block("x.md", 1, "bash", "X=1 jaxdl info runs/nothing-here\n", {}), str(tmp_path))


def test_a_benchmark_command_is_left_to_a_test_only_when_a_test_makes_that_very_run(monkeypatch):
    run_by_a_test = lambda line: h.run_by_a_test(shlex.split(line))
    assert run_by_a_test("python benchmarks/rnn_vs_torch.py")
    assert run_by_a_test("python benchmarks/rnn_vs_torch.py --steps 61 --rounds 6")  # run as --steps 6 --rounds 2
    assert run_by_a_test("python benchmarks/lm_vs_torch.py --steps=201")
    assert not run_by_a_test("python benchmarks/rnn_vs_torch.py --cell gru --steps 61")
    assert not run_by_a_test("python benchmarks/inference_speed.py")  # not one of QUICK_ALONE
    for command, test_file in h.RUN_BY_A_TEST.items():
        assert run_by_a_test(command)
        module = test_file.removesuffix(".py").replace("/", ".")
        assert __import__(module, fromlist=["PAGE_COMMAND"]).PAGE_COMMAND == command, test_file
    # in a bash block: a variable of the command's own (an env prefix) makes it a run of its own
    monkeypatch.setenv("DOCS_BLOCK_ENV", '{"JAX_PLATFORMS": "cpu"}')
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("JAXDL_MALLOC_DEFAULTS", raising=False)
    for name in [k for k in os.environ if k.startswith(h.RUN_ENV_PREFIXES) and k != "JAX_PLATFORMS"]:
        monkeypatch.delenv(name)
    assert not h.own_environment()
    monkeypatch.setenv("JAXDL_MALLOC_DEFAULTS", "0")
    assert h.own_environment()
