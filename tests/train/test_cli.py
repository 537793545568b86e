"""Typed configs from the command line: every field a flag, values parsed by type, errors as one line."""

import dataclasses

import pytest

from jaxdl import cli
from jaxdl.cli import field
from jaxdl.errors import UsageError
from jaxdl.train import TrainConfig


@dataclasses.dataclass
class Demo(TrainConfig):
    image_size: int = field(48, "side")
    name: str = field("x", "a name")
    flag: bool = field(False, "a switch")


def test_every_field_is_a_typed_flag():
    cfg = cli.parse(Demo, ["--epochs", "3", "--lr=0.01", "--image_size=32", "--image-size", "16", "--flag", "true"])
    assert (cfg.epochs, cfg.lr, cfg.image_size, cfg.flag) == (3, 0.01, 16, True)
    assert isinstance(cfg.lr, float) and cfg.name == "x"
    assert cli.parse(Demo, ["--flag"]).flag is True and cli.parse(Demo, ["--flag=no"]).flag is False
    assert cli.parse(Demo, ["--flag", "--no-flag"]).flag is False  # the last one wins, as for any flag
    assert cli.parse(Demo, []).tensorboard is True and cli.parse(Demo, ["--no-tensorboard"]).tensorboard is False


@pytest.mark.parametrize("argv,match", [
    (["--no-such-key", "1"], "unrecognized arguments: --no-such-key"),
    (["--epochs", "two"], "wants int, got 'two'"),
    (["--lr", "fast"], "wants float"),
    (["--flag", "maybe"], "wants bool"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "-4"], "--batch-size must be >= 1"),
    (["--optimizer", "lion"], "unknown --optimizer 'lion'"),
    (["--epo", "3"], "unrecognized"),  # no silent abbreviations
])
def test_bad_values_raise_usage_errors(argv, match):
    with pytest.raises(UsageError, match=match):
        cli.parse(Demo, argv)


def test_run_turns_usage_errors_into_exit_2(capsys):
    def main(argv):
        cli.parse(Demo, argv)

    with pytest.raises(SystemExit) as e:
        cli.run(main, ["--epochs", "zero"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
