"""Typed dataclass configs on the command line, and the exit-status-2 contract.

Every config field becomes `--field-name VALUE` (or `--field_name=VALUE`); the
value is parsed by the field's type, never executed. `run(main)` turns a
`UsageError` into one line on stderr and exit status 2 (a `Diverged` run: exit status 3).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, Callable, Sequence, TypeVar

from jaxdl.errors import Diverged, UsageError

C = TypeVar("C")


def field(default: Any, help: str) -> Any:
    """A config field with its one-line help (shown by `--help`)."""
    return dataclasses.field(default=default, metadata={"help": help})


def fixed(default: Any) -> Any:
    """An inherited field this config does not offer as a flag (e.g. epochs, for step-counted runs)."""
    return dataclasses.field(default=default, metadata={"cli": False})


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse would print usage too
        raise UsageError(f"{message} (see --help)")


_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _parser_for(type_: Any, name: str) -> Callable[[str], Any]:
    origin = typing.get_origin(type_)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [t for t in typing.get_args(type_) if t is not type(None)]
        base = _parser_for(inner[0], name)
        return lambda s: None if s.lower() in ("none", "") else base(s)
    if type_ is bool:
        def parse_bool(s: str) -> bool:
            if s.lower() not in _BOOL:
                raise ValueError
            return _BOOL[s.lower()]
        return parse_bool
    if type_ in (int, float, str):
        return type_
    raise TypeError(f"config field {name!r} has unsupported type {type_!r}")


def parse(config_cls: type[C], argv: Sequence[str] | None = None, description: str = "") -> C:
    """Parse argv into `config_cls`; unknown keys and badly typed values raise UsageError."""
    hints = typing.get_type_hints(config_cls)
    parser = _OneLineParser(description=description, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(config_cls):
        if not f.metadata.get("cli", True):
            continue
        conv = _parser_for(hints[f.name], f.name)

        def typed(s: str, conv=conv, f=f) -> Any:
            try:
                return conv(s)
            except ValueError:
                want = getattr(hints[f.name], "__name__", str(hints[f.name]))
                raise argparse.ArgumentTypeError(f"wants {want}, got {s!r}") from None

        flags = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            flags.append(f"--{f.name}")
        switch = {"nargs": "?", "const": True} if hints[f.name] is bool else {}  # `--flag` alone means true
        parser.add_argument(*flags, dest=f.name, type=typed, default=f.default, **switch,
                            metavar=type(f.default).__name__.upper() if f.default is not None else "VALUE",
                            help=f"{f.metadata.get('help', '')} (default: {f.default})")
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    return config_cls(**vars(ns))  # fields that are not flags keep their defaults


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Call `main(argv)`; a UsageError becomes `error: ...` on stderr and exit status 2, a Diverged
    run exit status 3."""
    try:
        main(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
