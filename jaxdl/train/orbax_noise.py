"""Silence orbax's reports of what jaxdl already handles, and only those.

When orbax fails to read one array of a damaged checkpoint, the reads of the
other arrays are abandoned mid-flight. Python reports each of them later, at a
moment set by the garbage collector, with a full traceback:
- a never-awaited coroutine goes to `sys.unraisablehook` ("Exception ignored in ...");
- a future whose exception nobody retrieved is logged by asyncio's default
  exception handler ("Future exception was never retrieved");
- a read that completes after orbax closed its event loop makes tensorstore's
  callback fail in `call_soon_threadsafe` ("Event loop is closed"), which is
  reported to `sys.unraisablehook` with no object (a bare traceback).
The failure itself has been reported already (the checkpoint is set aside with
a warning naming it), so these reports are noise that looks like a crash.
`quiet_abandoned_reads` (called before any read: the late completions are
printed the moment the read fails) installs, once per process, a filter for each route
that drops reports coming from orbax or tensorstore (or, for the closed loop,
from asyncio's own `call_soon_threadsafe`) and passes everything else on.

A failed write has one such report too: orbax writes in its own threads and logs
the thread's exception with a traceback ("_SignalingThread.run() raised an
exception") before raising the same exception to the caller, which reports it.
`quiet_failed_writes` (called before any write) drops that log record only.

A checkpoint saved mid-round has no metrics on purpose (it can never be the
best); `quiet_unranked_saves` drops orbax's warning about that on every such save.
"""

from __future__ import annotations

import gc
import logging
import sys
import traceback
from typing import Any

_STORAGE = ("orbax", "tensorstore")
_NEVER_RETRIEVED = "exception was never retrieved"


def _mentions_storage(text: str) -> bool:
    return any(name in text.lower() for name in _STORAGE) or "OCDBT" in text


def _in_storage_package(filename: str) -> bool:
    """A source file of the orbax or tensorstore packages (a folder of that name, not any file that
    merely mentions it)."""
    parts = filename.replace("\\", "/").split("/")[:-1]
    return any(name in parts for name in _STORAGE)


def _from_storage_code(unraisable: Any) -> bool:
    code = getattr(unraisable.object, "cr_code", None) or getattr(unraisable.object, "__code__", None)
    return _in_storage_package(getattr(code, "co_filename", ""))


def _exception_from_storage(error: BaseException | None) -> bool:
    while error is not None:  # the error or anything it was raised from
        frames = traceback.extract_tb(error.__traceback__)
        if any(_in_storage_package(f.filename) for f in frames) or _mentions_storage(str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


class _AbandonedStorageReads(logging.Filter):
    """Drops asyncio's "... exception was never retrieved" records about orbax/tensorstore reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if _NEVER_RETRIEVED not in message:
            return True
        error = record.exc_info[1] if record.exc_info else None
        return not (_exception_from_storage(error) or _mentions_storage(message))


def _late_completion(error: BaseException | None) -> bool:
    """A read completing after its event loop closed: "Event loop is closed" raised inside asyncio."""
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    return any(f.name == "call_soon_threadsafe" and "asyncio" in f.filename for f in frames)


def _filter_once(logger: str, kind: type[logging.Filter]) -> None:
    """Add a `kind` filter to `logger` unless it has one (the filters live as long as the process)."""
    log = logging.getLogger(logger)
    if not any(isinstance(f, kind) for f in log.filters):
        log.addFilter(kind())


def quiet_abandoned_reads() -> None:
    """Install the filters (once per process)."""
    if not getattr(sys.unraisablehook, "jaxdl_quiet_orbax", False):
        previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            if not (_from_storage_code(unraisable) or _exception_from_storage(unraisable.exc_value)
                    or _late_completion(unraisable.exc_value)):
                previous(unraisable)

        hook.jaxdl_quiet_orbax = True  # type: ignore[attr-defined]
        sys.unraisablehook = hook
    _filter_once("asyncio", _AbandonedStorageReads)


def collect_abandoned_reads() -> None:
    """After a failed read: the filters in place, and what can be collected now collected."""
    quiet_abandoned_reads()
    gc.collect()


class _FailedWriteThreads(logging.Filter):
    """Drops orbax's log record of a writing thread's exception (the exception reaches the caller)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("orbax" in record.pathname and "_SignalingThread.run() raised an exception" in str(record.msg))


def quiet_failed_writes() -> None:
    """Install the filter on absl's logger, which orbax logs to (once per process)."""
    _filter_once("absl", _FailedWriteThreads)


class _UnrankedSave(logging.Filter):
    """A checkpoint saved mid-round has no metrics on purpose (it can never be the best): orbax's
    warning about it on every such save is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


def quiet_unranked_saves() -> None:
    _filter_once("absl", _UnrankedSave)
