"""The leftovers of a failed orbax read are silenced; every other report still reaches the user."""

import asyncio
import gc
import logging
import sys

import pytest

from jaxdl.train.orbax_noise import collect_abandoned_reads


def _abandon_future(error: BaseException) -> None:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        future.set_exception(error)
        del future  # never retrieved: asyncio logs it when the future is collected
        gc.collect()
    finally:
        loop.close()


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    asyncio_log = logging.getLogger("asyncio")
    before = list(asyncio_log.filters)
    collect_abandoned_reads()
    yield
    asyncio_log.filters[:] = before


def test_an_abandoned_tensorstore_read_is_not_logged(quiet, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        _abandon_future(ValueError('OUT_OF_RANGE: Error reading "kernel/0.0" in OCDBT database at local file "x"'))
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()], caplog.text


def test_any_other_never_retrieved_exception_is_still_logged(quiet, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        _abandon_future(ValueError("a bug in the user's own coroutine"))
    assert [r for r in caplog.records if "never retrieved" in r.getMessage()], caplog.text


def test_other_unraisable_errors_still_reach_the_previous_hook(quiet):
    seen = []
    hook = sys.unraisablehook
    # the filter passes what is not orbax's to the hook it replaced: check through a fresh chain
    sys.unraisablehook = lambda u: seen.append(u)
    try:
        collect_abandoned_reads()  # wraps the recording hook
        class Boom:
            def __del__(self):
                raise RuntimeError("not from storage")
        Boom()
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert [u for u in seen if isinstance(u.exc_value, RuntimeError)], seen


def _late_completion_error() -> RuntimeError:
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as e:
        return e
    raise AssertionError("a closed loop accepted a callback")


class _Unraisable:
    def __init__(self, error, obj=None):
        self.exc_type, self.exc_value, self.exc_traceback = type(error), error, error.__traceback__
        self.err_msg, self.object = None, obj


def test_a_read_completing_after_its_loop_closed_is_dropped_other_runtime_errors_are_not(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    collect_abandoned_reads()
    sys.unraisablehook(_Unraisable(_late_completion_error()))
    assert seen == []
    sys.unraisablehook(_Unraisable(RuntimeError("Event loop is closed")))  # not raised inside asyncio
    assert len(seen) == 1
