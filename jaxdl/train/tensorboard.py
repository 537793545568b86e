"""TensorBoard event files for a run: `WORKDIR/tensorboard`, written by process 0 through tensorboardX
(no TensorFlow needed); `tensorboard --logdir runs` shows every run under `runs/`.

What a run logs there, at the training step it belongs to:
  train/<metric>      every step's loss (and accuracy, ...), from the values the loop already fetches
  train/learning_rate the schedule's value at each step
  train/examples_per_sec (or tokens) per round, compile excluded
  test/<metric>       each evaluation
  text/<name>         what an evaluation returns as text (a language model's sample)
  pictures            every picture the run saves under its workdir (curves, confusion matrix, samples),
                      as an image named after the file, at the latest step logged

Resuming: the writer opens with a purge step, which tells TensorBoard to drop the earlier events
from that step on: those a killed run wrote past its last checkpoint (what `MetricsLog.drop_after`
does for metrics.jsonl) and, as a round's steps are logged when the round ends, the steps of the
round the run resumes in, which it logs again. Every step appears once.

Pictures reach the writer through `plots.SAVED`: a picture saved under an open run's workdir goes to
that run's writer (the deepest such workdir when runs nest, as the diffusion run's judge does). A writer
stays open after `fit` returns, for the pictures an experiment draws afterwards, until the process
ends or the same workdir is opened again.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any

import numpy as np

from jaxdl import plots
from jaxdl.runtime import is_primary

SUBDIR = "tensorboard"


def _import_tensorboardx() -> None:
    """Import tensorboardX without torch: its package imports torch, where installed, only to accept
    torch tensors (never passed here), which costs ~2.5 s at every run's start. While tensorboardX
    loads, `import torch` fails, as where torch is absent; a torch imported already is left alone."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX catches
    try:
        import tensorboardX  # noqa: F401
    finally:
        del sys.modules["torch"]


_open: dict[str, "RunLog"] = {}  # absolute workdir -> its writer


class RunLog:
    """One run's TensorBoard events (`open_run` makes them; a disabled or non-primary one writes nothing).

    Events are written synchronously (tensorboardX's `EventsWriter` and summary protos; its
    `SummaryWriter` queues them for a thread, so a flush would not mean on disk) and flushed after
    each round and each picture: what a checkpoint covers is on disk before it is saved.
    """

    def __init__(self, workdir: str, resume_step: int, kept_through: int, enabled: bool = True):
        self.workdir = os.path.abspath(workdir)
        self.step = resume_step
        self.writer = None
        if enabled and is_primary():
            _import_tensorboardx()
            from tensorboardX.event_file_writer import EventsWriter

            logdir = os.path.join(self.workdir, SUBDIR)
            resumed = os.path.isdir(logdir)
            os.makedirs(logdir, exist_ok=True)
            # the name has the time in whole seconds: a suffix keeps a quick rerun from reusing (emptying) a file
            self.writer = EventsWriter(os.path.join(logdir, "events"), f".{time.time_ns()}")
            if resumed:  # TensorBoard drops the earlier events at steps >= this one
                self._start(kept_through)

    def _start(self, kept_through: int) -> None:
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self._write(Event(step=kept_through + 1, session_log=SessionLog(status=SessionLog.START)))

    def _write(self, event) -> None:
        event.wall_time = time.time()
        self.writer.write_event(event)

    def _summary(self, step: int, summary) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self._write(Event(step=step, summary=summary))

    def scalars(self, step: int, prefix: str, metrics: dict[str, Any]) -> None:
        """`prefix/name` for each scalar (a per-model array: its mean, as the curves show it)."""
        self.step = max(self.step, step)
        if self.writer is None:
            return
        from tensorboardX.summary import scalar

        for name, value in metrics.items():
            if isinstance(value, str) or not np.issubdtype(np.asarray(value).dtype, np.number):
                continue
            self._summary(step, scalar(f"{prefix}/{name}", float(np.mean(value))))

    def text(self, step: int, name: str, text: str) -> None:
        if self.writer is not None:
            from tensorboardX.summary import text as text_summary

            # markdown: a sample's newlines and spacing survive as preformatted text
            self._summary(step, text_summary(f"text/{name}", "```\n" + text.replace("```", "'''") + "\n```"))

    def picture(self, png: str) -> None:
        if self.writer is None:
            return
        from PIL import Image
        from tensorboardX.summary import image

        with Image.open(png) as im:
            pixels_HWC = np.asarray(im.convert("RGB"))
        tag = os.path.splitext(os.path.relpath(png, self.workdir))[0].replace(os.sep, "/")
        self._summary(self.step, image(tag, pixels_HWC, dataformats="HWC"))
        self.flush()  # pictures come seldom, often after training: on disk at once

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def open_run(workdir: str, resume_step: int, kept_through: int, enabled: bool = True) -> RunLog:
    """The writer of the run in `workdir`, resumed at `resume_step`, whose earlier events past
    `kept_through` are to be dropped (closing a writer opened there before)."""
    log = RunLog(workdir, resume_step, kept_through, enabled)
    old = _open.pop(log.workdir, None)
    if old is not None:
        old.close()
    _open[log.workdir] = log
    return log


def _picture_saved(png: str) -> None:
    path = os.path.abspath(png)
    owners = [w for w in _open if path.startswith(w + os.sep) and os.sep + SUBDIR + os.sep not in path[len(w):]]
    if owners:
        _open[max(owners, key=len)].picture(path)


def close_all() -> None:
    for log in _open.values():
        log.close()
    _open.clear()


plots.SAVED.append(_picture_saved)
atexit.register(close_all)
