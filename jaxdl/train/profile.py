"""`--profile-steps N`: a jax.profiler trace of N steady-state training steps, each step annotated.

The trace starts after the run's first two steps (the compile and one warm step) and goes to
`WORKDIR/tensorboard/plugins/profile/<time>/`, where TensorBoard's profile tab
(`pip install -e ".[tensorboard]"`: tensorboard and xprof) finds it; the `.trace.json.gz` beside it opens
in Perfetto (ui.perfetto.dev). The traced steps stay in the run's throughput: tracing slows them a
little, so profile apart from runs whose speed is the point.
"""

from __future__ import annotations

import contextlib
import os

import jax

from jaxdl.runtime import is_primary

from jaxdl.train.tensorboard import SUBDIR

WARM_STEPS = 1  # steps after the first (compiling) call of this invocation before the trace starts


class StepProfiler:
    def __init__(self, workdir: str, steps: int):
        self.logdir = os.path.join(workdir, SUBDIR)
        self.steps, self.seen, self.traced, self.active = steps, 0, 0, False

    def annotate(self, step: int):
        """A context for the call of `step` (1-based); starts the trace when its time comes."""
        if self.steps and not self.active and self.traced == 0 and self.seen == WARM_STEPS:
            jax.profiler.start_trace(self.logdir)
            self.active = True
        self.seen += 1
        if self.active:
            self.traced += 1
            return jax.profiler.StepTraceAnnotation("train", step_num=step)
        return contextlib.nullcontext()

    def after_step(self, state) -> None:
        """Stop once N steps are traced (waiting for them to finish)."""
        if self.active and self.traced >= self.steps:
            self.stop(state)

    def stop(self, state) -> None:
        if self.active:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            if is_primary():
                print(f"profile of {self.traced} steps: {self.logdir} (TensorBoard's profile tab, or the "
                      ".trace.json.gz in Perfetto)", flush=True)

