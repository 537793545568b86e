"""Typed dataclass configs on the command line, and the exit-status-2 contract.

Every config field becomes `--field-name VALUE` (or `--field_name=VALUE`); the
value is parsed by the field's type, never executed. `run(main)` turns a
`UsageError` into one line on stderr and exit status 2 (a `Diverged` run: exit status 3; a
checkpoint or file that cannot be written, e.g. a full disk: exit status 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import math
import os
import sys
import typing
from typing import Any, Callable, Sequence, TypeVar

from jaxdl.errors import Diverged, UsageError

C = TypeVar("C")


RESUME = ("same", "free", "length")


def field(default: Any, help: str, resume: str = "same") -> Any:
    """A config field with its one-line help (shown by `--help`).

    resume: whether a resumed run may change it. "same" (the default): no, it shapes the result;
    "free": yes, it cannot change the result so far (logging and checkpoint cadence, placement,
    what is printed); "length": the run's length (yes; a learning-rate schedule laid out for the old
    length is stretched from the resumed step on, and the run says so).
    """
    if resume not in RESUME:
        raise ValueError(f"resume must be one of {RESUME}, got {resume!r}")
    return dataclasses.field(default=default, metadata={"help": help, "resume": resume})


def fixed(default: Any) -> Any:
    """An inherited field this config does not offer as a flag (e.g. epochs, for step-counted runs)."""
    return dataclasses.field(default=default, metadata={"cli": False})


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse would print usage too
        raise UsageError(f"{message} (see --help)")


_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_SHOWN = 160  # characters of a long value that a message quotes (a usual path is shorter)


def shown(value: Any) -> str:
    """`repr(value)`, cut to its first characters when long, so a message that quotes it stays one short line."""
    if not isinstance(value, str) or len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value):,} characters)"


def check_path(flag: str, path: str) -> None:
    """Refuse a path this system cannot name (a name or the whole path too long), before anything
    reads or writes it; "" and URLs (gs://...) are left to their callers."""
    if not path or "://" in path:
        return
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise UsageError(f"{flag} {shown(path)} is too long for this system's paths (a name holds at most "
                             f"{os.pathconf('/', 'PC_NAME_MAX')} bytes, a path {os.pathconf('/', 'PC_PATH_MAX'):,}): "
                             "shorten it") from None


def _shortened(message: str, values: Sequence[str]) -> str:
    """`message` with each long or unprintable value it quotes (repr or raw) written as `shown` writes it."""
    quoted = {v for v in values if v and (len(v) > _SHOWN or not v.isprintable())}
    for v in sorted(quoted, key=len, reverse=True):
        message = message.replace(repr(v), shown(v)).replace(v, shown(v))
    return message


def _text(s: str) -> str:
    """A str value: NUL and lone surrogates (what Python makes of bytes the locale cannot decode) are
    refused here, since no path, prompt or name can carry them on."""
    if "\x00" in s:
        raise ValueError("text without NUL characters")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("UTF-8 text (it holds bytes that do not decode as UTF-8)") from None
    return s


_FLOAT32_MAX = 3.4028234663852886e38  # settings meet float32 arrays, where anything larger is inf


def _finite(s: str) -> float:
    try:
        value = float(s)
    except ValueError:
        value = math.nan
    if not abs(value) <= _FLOAT32_MAX:  # nan and inf parse as floats (and 1e999 overflows to inf)
        raise ValueError("a finite number, within float32's range (+-3.4e38)")
    return value


def _whole(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise ValueError("a whole number") from None


def _parser_for(type_: Any, name: str) -> Callable[[str], Any]:
    origin = typing.get_origin(type_)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [t for t in typing.get_args(type_) if t is not type(None)]
        base = _parser_for(inner[0], name)
        return lambda s: None if s.lower() in ("none", "") else base(s)
    if type_ is bool:
        def parse_bool(s: str) -> bool:
            if s.lower() not in _BOOL:
                raise ValueError("true or false (also yes/no, 1/0)")
            return _BOOL[s.lower()]
        return parse_bool
    parsers: dict[Any, Callable[[str], Any]] = {int: _whole, float: _finite, str: _text}
    if type_ in parsers:
        return parsers[type_]
    raise TypeError(f"config field {name!r} has unsupported type {type_!r}")


@functools.lru_cache(maxsize=None)
def _parser(config_cls: type, description: str) -> _OneLineParser:
    """The argument parser for a config class (built once: argparse spends milliseconds per flag)."""
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
            except ValueError as e:
                want = getattr(hints[f.name], "__name__", str(hints[f.name]))
                raise argparse.ArgumentTypeError(f"wants {want}, got {shown(s)}: give {e}") from None

        flags = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            flags.append(f"--{f.name}")
        switch = {"nargs": "?", "const": True} if hints[f.name] is bool else {}  # `--flag` alone means true
        parser.add_argument(*flags, dest=f.name, type=typed, default=f.default, **switch,
                            metavar=type(f.default).__name__.upper() if f.default is not None else "VALUE",
                            help=f"{f.metadata.get('help', '')} (default: {f.default})")
        if hints[f.name] is bool:  # --no-flag: the same as --flag false
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_const", const=False,
                                help=argparse.SUPPRESS)
    return parser


def parse(config_cls: type[C], argv: Sequence[str] | None = None, description: str = "") -> C:
    """Parse argv into `config_cls`; unknown keys and badly typed values raise UsageError.

    Floats must be finite, str values free of NUL and undecodable bytes; every UsageError (the
    config's own checks included) quotes a huge value shortened.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    values = [part for a in args for part in (a, a.partition("=")[2])]  # `--flag=VALUE` quotes VALUE
    try:
        ns = _parser(config_cls, description).parse_args(args)
        return config_cls(**vars(ns))  # fields that are not flags keep their defaults
    except UsageError as e:
        raise UsageError(_shortened(str(e), values)) from None


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Call `main(argv)`; each error people see becomes one line `error: ...` on stderr and its exit
    status (jaxdl/errors.py): 2 a UsageError, 3 a Diverged run, 4 a write the storage refused (a
    WriteFailed, or an OSError saying the disk is full or read-only, wherever it was raised)."""
    import errno

    from jaxdl.errors import WriteFailed

    def close_progress_bars() -> None:  # a write fails mid-round: the error line then starts its own line
        tqdm = sys.modules.get("tqdm")
        for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
            bar.close()

    try:
        main(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except WriteFailed as e:
        close_progress_bars()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(4)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
            raise
        close_progress_bars()
        print(f"error: cannot write {e.filename or 'a file'}: {e.strerror} ({errno.errorcode[e.errno]}): free space "
              "or fix the disk, then run the same command again", file=sys.stderr)
        sys.exit(4)

