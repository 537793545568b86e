"""The engine's config fields; every experiment's config extends this one.

Building a config joins the multi-process runtime when its flags (or a detected
TPU pod / SLURM / MPI job) ask for it, so that happens before anything touches
a device, in every experiment alike.
"""

from __future__ import annotations

import dataclasses
import os
import re

from jaxdl.cli import check_path, field
from jaxdl.errors import UsageError
from jaxdl.train import distributed

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine")


def run_name(script: str, *choices: str) -> str:
    """`runs/SCRIPT-CHOICE-...` from the choices that are not empty; a dataset spec gives its last
    name (`text:books/war.txt` -> `war.txt`, `tfds:mnist` -> `mnist`)."""
    names = [re.sub(r"[^\w.-]+", "_", os.path.basename(c.split(":", 1)[-1].rstrip("/\\"))) for c in choices if c]
    return "runs/" + "-".join([script, *[n for n in names if n.strip("._")]])


@dataclasses.dataclass
class TrainConfig:
    epochs: int = field(5, "passes over the training set; a larger value continues a finished run", resume="length")
    batch_size: int = field(64, "examples per training step")
    optimizer: str = field("adam", "adam (L2 added to the gradient, as PyTorch) | adamw | sgd | rmsprop")
    lr: float = field(1e-3, "peak learning rate")
    weight_decay: float = field(1e-4, "L2 for adam/sgd/rmsprop, decoupled decay for adamw")
    momentum: float = field(0.9, "sgd momentum")
    schedule: str = field("constant", "learning-rate schedule: constant | cosine (decays to 0 at the end)")
    warmup_steps: int = field(0, "linear warmup from 0 over this many steps")
    clip_norm: float = field(0.0, "clip gradients to this global norm; 0 = off")
    seed: int = field(0, "seeds init, data order, augmentation and dropout")
    workdir: str = field("", "where checkpoints, metrics, logs and pictures go; rerun to resume (default: runs/ and "
                             "the script's main choices, e.g. runs/rnn-gru)", resume="free")
    checkpoint_dir: str = field("", "checkpoints here instead of WORKDIR/checkpoints (e.g. gs://BUCKET/run on TPU)",
                                resume="free")
    checkpoint_every: int = field(0, "also checkpoint every N steps (0 = only at epoch ends)", resume="free")
    keep_checkpoints: int = field(3, "keep the last K checkpoints (plus the best)", resume="free")
    log_every: int = field(10, "refresh the progress bar's loss/accuracy every N steps", resume="free")
    tensorboard: bool = field(True, "write TensorBoard logs to WORKDIR/tensorboard (--no-tensorboard: none)",
                              resume="free")
    profile_steps: int = field(0, "trace N steady-state steps with jax.profiler into WORKDIR/tensorboard "
                                  "(TensorBoard's profile tab, or Perfetto); 0 = off", resume="free")
    mesh: str = field("", "device mesh data=N,fsdp=M (params sharded on fsdp); default: all devices on data",
                      resume="free")
    coordinator: str = field("", "multi-process: HOST:PORT of process 0 (auto-detected on TPU pods, SLURM, MPI)",
                             resume="free")
    num_processes: int = field(0, "multi-process: how many processes in all (with --coordinator)", resume="free")
    process_id: int = field(-1, "multi-process: this process's index, 0..N-1 (with --coordinator)", resume="free")
    max_bad_steps: int = field(5, "stop (exit 3) after this many non-finite steps in a row; each is skipped",
                               resume="free")
    dp_clip: float = field(0.0, "differentially-private step: clip each example's gradient to this norm; 0 = off")
    dp_noise: float = field(0.0, "differentially-private step: Gaussian noise std, in units of --dp-clip")
    init_from: str = field("", "fine-tune: start from this run's best params (a workdir of the same model; "
                               "layers that do not fit start fresh)", resume="free")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "warmup_steps", "clip_norm", "checkpoint_every", "momentum",
                     "max_bad_steps", "dp_clip", "dp_noise", "profile_steps"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        # Counts that reach compiled code as int32 constants, and a batch that must fit in memory.
        for name, most, what in (("warmup_steps", 2 ** 31 - 1, "steps"), ("max_bad_steps", 2 ** 31 - 1, "steps"),
                                 ("batch_size", 2 ** 20, "examples per step"),
                                 ("profile_steps", 10_000, "steps traced; a trace grows with each")):
            if getattr(self, name) > most:
                raise UsageError(f"--{name.replace('_', '-')} must be at most {most:,} ({what}), got "
                                 f"{getattr(self, name):,}: lower it")
        if not 0 <= self.seed < 2 ** 32:
            raise UsageError(f"--seed must be in 0..{2 ** 32 - 1} (NumPy refuses negative seeds and JAX keeps 32 "
                             f"bits, so larger ones repeat smaller ones), got {self.seed}")
        if self.momentum >= 1:
            raise UsageError(f"--momentum must be in [0, 1) (sgd's decay of past gradients), got {self.momentum}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown --optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        flag, value = self.lr_schedule_flag()
        if value not in SCHEDULES:
            raise UsageError(f"unknown {flag} {value!r}: use one of {', '.join(SCHEDULES)}")
        if self.dp_noise and not self.dp_clip:
            raise UsageError("--dp-noise needs --dp-clip (the noise is in units of the clip norm)")
        if not self.workdir:
            self.workdir = self.default_workdir()
        for name in ("workdir", "checkpoint_dir", "init_from"):
            check_path(f"--{name.replace('_', '-')}", getattr(self, name))
        for name in ("workdir", "checkpoint_dir"):
            if os.path.isfile(getattr(self, name)):
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)} is a file, not a directory: "
                                 "give a directory")
        if self.init_from and os.path.abspath(self.init_from) == os.path.abspath(self.workdir):
            raise UsageError(f"--init-from {self.init_from} is this run's own --workdir: give the new run another one")
        if self.init_from and not self.resuming() and not os.path.isfile(os.path.join(self.init_from, "model.json")):
            raise UsageError(f"--init-from {self.init_from}: no model.json there: point it at a trained run's --workdir")
        distributed.initialize(self.coordinator, self.num_processes, self.process_id)
        if self.mesh:  # its syntax and size, before any data is read (the device count is known from here on)
            import jax

            from jaxdl.train import parallel

            parallel.parse_mesh(self.mesh, jax.device_count(), jax.process_count())

    def default_workdir(self) -> str:
        """The workdir when --workdir is not given: each script names it by its main choices, so
        commands that differ in them (--cell gru, --task sine) do not resume each other's runs."""
        return "runs/default"

    def changed(self, name: str) -> str:
        """The field's value as text where it differs from the default, else "" (for workdir names)."""
        value = getattr(self, name)
        return "" if value == getattr(type(self), name) else str(value)

    def checkpoint_path(self) -> str:
        return self.checkpoint_dir or os.path.join(self.workdir, "checkpoints")

    def resuming(self) -> bool:
        """Whether the checkpoint directory already holds a checkpoint (a rerun continues from it)."""
        from etils import epath

        path = epath.Path(self.checkpoint_path())
        return path.is_dir() and any(p.name.isdigit() for p in path.iterdir())

    def warm_start_from(self) -> str:
        """--init-from, or "" when the run resumes from its own checkpoint (which replaces any start)."""
        return "" if not self.init_from or self.resuming() else self.init_from

    def lr_schedule_flag(self) -> tuple[str, str]:
        """(flag, value) of the learning-rate schedule; a config whose --schedule means something else moves it."""
        return "--schedule", self.schedule
