"""The bad-input sweep: every flag of every experiment, given the bad values bad_inputs.py generates,
stops with a UsageError (one `error: ` line on stderr, exit status 2 under `cli.run`) before anything
is written or trained, or is a legitimate value listed there with its reason.

Most cases run in-process through `cli.parse`; those the data decides run `main()` in-process with
the engine's `fit` replaced by a tripwire; one real process per experiment checks the whole contract
(one stderr line, exit 2, no traceback, the workdir absent or byte-identical).

    pytest tests/experiments/test_bad_inputs.py -q -s -k sweep_count   # prints how many cases the sweep tries
"""

import hashlib
import os
import subprocess
import sys

import pytest

from jaxdl import cli
from jaxdl.errors import UsageError
from tests.experiments import bad_inputs
from tests.experiments.bad_inputs import ALLOWED, ALLOWED_IN, EXPERIMENTS, EXTRA, MAIN, PENDING, cases

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_MESSAGE = 400  # characters: a message quoting a huge value quotes it shortened

# Small settings for the runs that reach main(): each bad value is appended after these (the last flag wins).
TINY = {
    "cnn": ["--image-size", "8", "--epochs", "1"],
    "mlp": ["--epochs", "1", "--steps-per-epoch", "1"],
    "rnn": ["--steps", "1", "--hidden", "8", "--embed", "8", "--layers", "1"],
    "transformer": ["--steps", "1", "--d-model", "16", "--heads", "2", "--layers", "1", "--warmup-steps", "0"],
    "diffusion": ["--steps", "1", "--image-size", "8"],
    "typed_digits": ["--per-font", "1"],
    "long_range": ["--steps", "1", "--lags", "2", "--hidden", "4", "--cells", "rnn"],
}


def _path_flag(experiment):
    return "--out" if experiment == "typed_digits" else "--workdir"


def _one_line(message, flag, value=None):
    """Problems with an error message: not one short line, or naming neither the flag nor (given) the value."""
    problems = []
    if "\n" in message or "\r" in message:
        problems.append("spans lines")
    if len(message) > MAX_MESSAGE:
        problems.append(f"is {len(message):,} characters")
    named = flag in message or "--" + flag[2:].replace("-", "_") in message
    if not named and not (value is not None and (repr(value) in message or f"got {value}" in message)):
        problems.append(f"does not name {flag}" + (f" or {value!r}" if value is not None else ""))
    return problems


def _listing(root):
    """Every file and folder under root, with each file's SHA-256."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), root) + "/"] = None
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                out[os.path.relpath(os.path.join(d, name), root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _existing_workdir(path):
    """A workdir laid out as a finished run leaves it (only compared before and after, never read as a run)."""
    files = {"summary.json": '{"test_accuracy": 0.9}', "metrics.jsonl": '{"step": 3, "split": "test"}\n',
             "config.json": '{"format": 1}', "checkpoints/3/state/data": "weights"}
    for name, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    return path


def _a_file(tmp_path):
    """What an argument FILE in bad_inputs.EXTRA names."""
    file = tmp_path / "file"
    file.write_text("not a folder")
    return file


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_sweep_parse(experiment, tmp_path, monkeypatch):
    """Every generated case of the experiment is refused by `cli.parse` (a short line naming the flag)
    or, where listed as allowed, accepted as given; nothing is written, wherever a path points."""
    monkeypatch.chdir(tmp_path)  # relative paths among the values land here
    Config = bad_inputs.config_of(experiment)
    base = [f"{_path_flag(experiment)}={tmp_path / 'absent'}"]
    problems = []
    for case in cases(experiment):
        if case["stage"] not in ("parse", "allowed"):
            continue
        what = f"{case['flag']} {case['kind']} ({case['stage']})"
        try:
            cfg = cli.parse(Config, [*base, f"{case['flag']}={case['value']}"])
        except UsageError as e:
            if case["stage"] == "allowed":
                problems.append(f"{what}: refused ({cli.shown(str(e))}), but listed as allowed: {case['reason']}")
            problems += [f"{what}: the message {p}: {cli.shown(str(e))}" for p in _one_line(str(e), case["flag"])]
            continue
        if case["stage"] == "parse":
            problems.append(f"{what}: {cli.shown(case['value'])} was accepted")
        elif case["reason"] != "the field's default" and getattr(cfg, case["field"]) != case["type"](case["value"]):
            problems.append(f"{what}: parsed as {getattr(cfg, case['field'])!r}")
    assert not problems, "\n".join(problems)
    assert os.listdir(tmp_path) == [], "parsing wrote files"


@pytest.mark.parametrize("experiment,argv,what", [(e, a, w) for e, a, s, w in EXTRA if s == "parse"],
                         ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_sweep_extra_parse(experiment, argv, what, tmp_path):
    """Checks that need two flags, or values no generated kind produces, are refused by `cli.parse`."""
    file = _a_file(tmp_path)
    argv = [str(file) if a == "FILE" else a for a in argv]
    with pytest.raises(UsageError) as e:  # the case's flags come last and win
        cli.parse(bad_inputs.config_of(experiment), [_path_flag(experiment), str(tmp_path / "absent"), *argv])
    assert _one_line(str(e.value), argv[0]) == [], str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["file"] and file.read_text() == "not a folder"


def _main_cases():
    for e, field, kind in MAIN:
        case = next(c for c in cases(e) if (c["field"], c["kind"]) == (field, kind))
        yield pytest.param(e, [case["flag"], case["value"]], MAIN[(e, field, kind)], id=f"{e}-{field}-{kind}")
    for e, argv, stage, what in EXTRA:
        if stage == "main":
            yield pytest.param(e, argv, what, id=f"{e}-{'-'.join(argv)}"[:60])


@pytest.fixture
def tripwire(monkeypatch):
    """No training step and no image may be made: the bad value must be refused before."""
    import importlib

    def reached(*args, **kwargs):
        raise AssertionError("training (or writing images) began: the bad value was not refused before it")

    for name in ("cnn", "mlp", "transformer", "diffusion"):
        monkeypatch.setattr(importlib.import_module(f"experiments.{name}"), "fit", reached)
    monkeypatch.setattr(importlib.import_module("jaxdl.tasks.text_lm"), "fit", reached)
    monkeypatch.setattr(importlib.import_module("experiments.typed_digits"), "glyph", reached)


@pytest.mark.parametrize("experiment,argv,what", list(_main_cases()))
def test_sweep_main(experiment, argv, what, tmp_path, tripwire):
    """Values the data decides are refused by main() before any training step, the workdir never made."""
    import importlib

    target, file = tmp_path / "absent", _a_file(tmp_path)
    argv = [str(file) if a == "FILE" else a for a in argv]
    main = importlib.import_module(f"experiments.{experiment}").main
    with pytest.raises(UsageError) as e:
        main([*TINY[experiment], _path_flag(experiment), str(target), *argv])  # the case's flags come last and win
    # the data's own loaders (not the config) phrase some of these: naming the value is enough there
    assert _one_line(str(e.value), argv[-2], argv[-1]) == [], f"{what}: {cli.shown(str(e.value))}"
    assert sorted(os.listdir(tmp_path)) == ["file"] and file.read_text() == "not a folder"


@pytest.mark.parametrize("key", list(PENDING), ids="-".join)
@pytest.mark.xfail(strict=True, reason="a check the owners of that code are expected to add (see PENDING)")
def test_sweep_pending(key, tmp_path):
    experiment, field, kind = key
    case = next(c for c in cases(experiment) if (c["field"], c["kind"]) == (field, kind))
    with pytest.raises(UsageError):
        cli.parse(bad_inputs.config_of(experiment), [case["flag"], case["value"], _path_flag(experiment),
                                                     str(tmp_path / "w")])


def test_sweep_count():
    """Every listed exception matches a generated case (no stale entry), and the count is printed."""
    everything = [c for e in EXPERIMENTS for c in cases(e)]
    keys = {(c["experiment"], c["field"], c["kind"]) for c in everything}
    stale = [k for k in [*ALLOWED_IN, *MAIN, *PENDING] if k not in keys]
    stale += [k for k in ALLOWED if not any(k == (c["field"], c["kind"]) for c in everything)]
    assert not stale, f"listed but never generated: {stale}"
    stages = {s: sum(c["stage"] == s for c in everything) for s in ("parse", "main", "allowed", "pending")}
    extra = {s: sum(x[2] == s for x in EXTRA) for s in ("parse", "main")}
    fields = sum(len(bad_inputs.flags(e)) for e in EXPERIMENTS)
    total = len(everything) + len(EXTRA)
    print(f"\nbad-input sweep: {total} cases over {fields} flags of {len(EXPERIMENTS)} experiments: "
          f"{stages['parse'] + extra['parse']} refused by the parser or config checks, "
          f"{stages['main'] + extra['main']} by main() before training, {stages['allowed']} allowed "
          f"(with reasons), {stages['pending']} pending")
    assert stages["parse"] > stages["allowed"]  # a sweep that allowed most values would sweep nothing


# --- one real process per experiment: the contract end to end ---------------------------------------

PROCESSES = {  # experiment -> (argv, the flag the error names, whether the path already exists)
    "cnn": (["--lr", "nan"], "--lr", True),
    "mlp": (["--steps-per-epoch", str(10 ** 12)], "--steps-per-epoch", False),
    "rnn": ([b"--prompt", b"\xff"], "--prompt", True),  # a byte the locale cannot decode: a lone surrogate
    "transformer": (["--seq-len", "16", "--prompt", "e" * bad_inputs.LONG], "--prompt", False),  # main() refuses
    "diffusion": (["--seed", "-1"], "--seed", True),
    "typed_digits": (["--size", str(10 ** 12)], "--size", False),
    "long_range": (["--lags", "5,0"], "--lags", True),
}


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """All six started at once (each spends its time importing), then awaited: experiment -> result."""
    runs = {}
    for experiment, (argv, flag, exists) in PROCESSES.items():
        path = str(tmp_path_factory.mktemp(experiment) / "run")
        if exists:
            _existing_workdir(path)
        before = _listing(path) if exists else None
        proc = subprocess.Popen([sys.executable, f"experiments/{experiment}.py", *argv, _path_flag(experiment), path],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        runs[experiment] = (proc, path, before, flag)
    results = {}
    for experiment, (proc, path, before, flag) in runs.items():
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[experiment] = (proc.returncode, err.decode("utf-8", "replace"), path, before, flag)
    return results


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_sweep_real_process(experiment, processes):
    rc, err, path, before, flag = processes[experiment]
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert _one_line(lines[0], flag) == [], lines[0]
    if before is None:
        assert not os.path.exists(path), f"{path} was created"
    else:
        assert _listing(path) == before, "the existing workdir changed"
