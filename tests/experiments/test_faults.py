"""Faults of the storage during a run, end to end: experiments/mlp.py as real processes whose checkpoint
directory turns into a file mid-run, whose disk fills during a save (a file-size limit: writes past it
fail with EFBIG, as on a full disk, even as root), or that are SIGKILLed while a checkpoint is being
written; and restores that fail for a reason other than damage.

The promise checked: a refused write ends the run with exit status 4 and one line on stderr naming the
directory and the OS error (no traceback); the checkpoints completed before are intact and the same
command resumes from the newest of them and ends as a run never interrupted. A restore that fails
because of the storage (permissions, I/O, a storage service) is one `error:` line naming the path and
the error, exit status 2, and nothing is moved to checkpoints.damaged/ (damage still is).
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import jaxdl
from experiments import mlp
from jaxdl import cli
from jaxdl.errors import UsageError, WriteFailed
from jaxdl.train import checkpoint
from tests.experiments.test_resilience import (  # noqa: F401 (env: the fixture, one compilation cache)
    ROOT, TIMEOUT_S, Run, env, interrupt, run_to_end, saved_steps)
from tests.experiments.workdir import changes, exits_2_untouched, latest_params, snapshot

STORED = os.path.join(ROOT, "tests", "data", "checkpoint_format_1")  # a real run's checkpoints 5 and 10
# the command that made it, less its --workdir: `experiments/mlp.py --task xor ...`
STORED_COMMAND = json.load(open(os.path.join(STORED, "reference.json")))["command"].split()[1:-2]

# 12 steps, a checkpoint after each. Hidden 1024: the first layer's kernel alone is 256 KB, and orbax writes
# one array's bytes into one file, so every checkpoint has a file over FILE_SIZE_LIMIT however orbax groups its
# writes (at hidden 256 the kernel, Adam's mu and nu, 64 KB each, sometimes landed in separate files)
CMD = [sys.executable, "experiments/mlp.py", "--task", "digits", "--hidden", "1024", "--epochs", "2",
       "--steps-per-epoch", "6", "--checkpoint-every", "1", "--log-every", "3"]
TOTAL = 12
FILE_SIZE_LIMIT = 100_000  # above every other file the run writes (curves.png: ~50 KB)
# runs the command after it with writes past FILE_SIZE_LIMIT failing (EFBIG); Python ignores SIGXFSZ
LIMITED = [sys.executable, "-c", "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
           f"({FILE_SIZE_LIMIT}, {FILE_SIZE_LIMIT})); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
           "run_name='__main__')"]


def _with(cmd, flag, value):
    cmd = list(cmd)
    cmd[cmd.index(flag) + 1] = value
    return cmd


def one_error_line(err):
    """The run's only `error: ` line, which must be the last thing on stderr, with no traceback."""
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err[-3000:]
    return errors[0]


def assert_same_finish(workdir, baseline, why):
    """The newest params bit for bit, metrics.jsonl line for line, and the final test figures."""
    assert saved_steps(workdir)[-1] == saved_steps(baseline)[-1] == TOTAL, why
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(latest_params(workdir)),
                            jax.tree.leaves(latest_params(baseline))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{jax.tree_util.keystr(path)}: {why}")
    lines = lambda w: (w / "metrics.jsonl").read_text().splitlines()
    assert lines(workdir) == lines(baseline), why
    summary = lambda w: json.loads((w / "summary.json").read_text())
    for key in ("test_accuracy", "test_loss", "steps"):
        assert summary(workdir)[key] == summary(baseline)[key], f"{key}: {why}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env):
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_to_end(CMD, workdir, env)
    return workdir


def test_checkpoint_directory_replaced_by_a_file_mid_run(tmp_path, env, uninterrupted):
    workdir, moved = tmp_path / "run", tmp_path / "moved"
    ckpt = workdir / "checkpoints"
    run = Run(CMD, workdir, env, "unwritable")
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(saved_steps(workdir)) < 2:
            assert run.proc.poll() is None, f"exited {run.proc.returncode} too soon:\n{run.output()[1][-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.002)
        os.rename(ckpt, moved)
        ckpt.write_text("not a directory any more")
        code, out, err = run.wait()
    finally:
        run.close()
    assert code == 4, f"exited {code}\n{out[-2000:]}\n{err[-3000:]}"
    line = one_error_line(err)
    said = re.fullmatch(rf"error: cannot save checkpoint (\d+) to {ckpt}: Not a directory \(ENOTDIR\).*; step (\d+) is "
                        "the newest complete checkpoint: free space or fix the directory, then run the same command "
                        "again to resume from it", line)
    assert said, line
    assert int(said.group(2)) in [int(s) for s in os.listdir(moved) if s.isdigit()], os.listdir(moved)
    assert not (workdir / "summary.json").exists()
    ckpt.unlink()
    moved.rename(ckpt)
    newest = saved_steps(workdir)[-1]
    out, err = run_to_end(CMD, workdir, env, "rerun")
    assert f"Resuming from step {newest} " in out and "cannot be read" not in err, err[-3000:]
    assert_same_finish(workdir, uninterrupted, f"directory replaced at step {newest}")


def test_disk_full_during_a_save(tmp_path, env, uninterrupted):
    """A finished run given one more epoch: its first save fails; the checkpoints it had stay byte for byte."""
    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted, workdir)
    before = snapshot(workdir / "checkpoints")
    longer = _with(CMD, "--epochs", "3")
    done = subprocess.run([*LIMITED, *longer[1:], "--workdir", str(workdir)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 4, f"exited {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert f"Resuming from step {TOTAL} " in done.stdout
    line = one_error_line(done.stderr)
    assert line.startswith(f"error: cannot save checkpoint {TOTAL + 1} to {workdir}/checkpoints: File too large "
                           f"(EFBIG)") and f"; step {TOTAL} is the newest complete checkpoint: " in line, line
    after = snapshot(workdir / "checkpoints")
    assert not changes(before, after)  # the failed save's partial files removed too
    out, _ = run_to_end(longer, workdir, env, "rerun")
    assert f"Resuming from step {TOTAL} " in out and saved_steps(workdir)[-1] == TOTAL + 6


def test_sigkill_during_a_save_then_rerun_finishes_as_if_uninterrupted(tmp_path, env, uninterrupted):
    def saving(w):
        steps, ckpt = saved_steps(w), w / "checkpoints"
        return bool(steps) and any(".orbax-checkpoint-tmp" in name for name in os.listdir(ckpt))

    workdir = tmp_path / "run"
    code, _, err, newest = interrupt(CMD, workdir, env, signal.SIGKILL, saving, "SIGKILL-in-save")
    assert code == -signal.SIGKILL, f"exited {code}\n{err[-2000:]}"
    complete = saved_steps(workdir)[-1]
    assert newest <= complete < TOTAL
    out, err = run_to_end(CMD, workdir, env, "rerun")
    assert f"Resuming from step {complete} " in out and "cannot be read" not in err, err[-3000:]
    assert_same_finish(workdir, uninterrupted, f"killed while saving after step {newest}")


@pytest.fixture
def stored(tmp_path):
    """A copy of the stored format-1 run (checkpoints 5 and 10; tests/data/checkpoint_format_1)."""
    return shutil.copytree(os.path.join(STORED, "workdir"), tmp_path / "stored")


def _fail_restoring(monkeypatch, step, error):
    real = ocp.CheckpointManager.restore

    def restore(self, at, *args, **kwargs):
        if at == step:
            raise error
        return real(self, at, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)


@pytest.mark.parametrize("error, says", [
    (PermissionError(errno.EACCES, "Permission denied", "/x/10/state/d/1"),
     "Permission denied (EACCES) at /x/10/state/d/1"),
    (OSError(errno.EIO, "Input/output error"), "Input/output error (EIO)"),
    (ValueError("PERMISSION_DENIED: Error reading \"params.w/0\": Failed to open: \"/x\": Permission denied "
                "[os_error_code='13']"), "Permission denied (EACCES)"),
    (ValueError("UNAVAILABLE: Error reading \"params.w/0\" in OCDBT database at gs://b/run/10/state: HTTP 503"),
     "UNAVAILABLE: Error reading"),
], ids=["PermissionError", "EIO", "tensorstore-EACCES", "storage-service"])
def test_a_storage_error_on_restore_is_reported_not_set_aside(stored, tmp_path, monkeypatch, capsys, error, says):
    _fail_restoring(monkeypatch, 10, error)
    with pytest.raises(UsageError, match=re.escape(f"checkpoint {stored}/checkpoints/10 cannot be read: {says}")):
        jaxdl.load(stored, "latest")
    err = exits_2_untouched(mlp.main, STORED_COMMAND[1:], stored, tmp_path, capsys)  # a resume: nothing moved
    assert f"checkpoint {tmp_path / 'run'}/checkpoints/10 cannot be read: {says}" in err


def test_damage_at_the_same_place_is_still_set_aside(stored, monkeypatch, capsys):
    """The contrast for the test above: the same failure point with a data error resumes from step 5."""
    _fail_restoring(monkeypatch, 10, ValueError("DATA_LOSS: Error decoding manifest: Encoded length (10) is short"))
    mlp.main([*STORED_COMMAND[1:], "--workdir", str(stored)])
    out, err = capsys.readouterr()
    assert f"checkpoint {stored}/checkpoints/10 cannot be read (ValueError): moved to" in err
    assert "Resuming from step 5 " in out and (stored / "checkpoints.damaged" / "10" / "state").is_dir()


def test_an_unlistable_item_is_told_from_a_missing_one(stored, tmp_path, monkeypatch, capsys):
    """What orbax makes of a state directory it may not list (as a user without rights, or a lost mount):
    an item without metadata. Opening the checkpoint's files tells the permission error apart."""
    real_metadata = ocp.CheckpointManager.item_metadata
    monkeypatch.setattr(ocp.CheckpointManager, "item_metadata",
                        lambda self, at: {"state": None} if at == 10 else real_metadata(self, at))

    def open_denied(path, *args, **kwargs):
        if f"{os.sep}10{os.sep}state" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", open_denied, raising=False)
    with pytest.raises(UsageError, match=re.escape(f"checkpoint {stored}/checkpoints/10 cannot be read: "
                                                   f"Permission denied (EACCES) at {stored}/checkpoints/10/state/")):
        jaxdl.load(stored, "latest")
    err = exits_2_untouched(mlp.main, STORED_COMMAND[1:], stored, tmp_path, capsys)
    assert "cannot be read: Permission denied (EACCES)" in err


def _without_root_override():
    """A command prefix under which file permissions hold: none for a user, setpriv for root."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if shutil.which("setpriv") and subprocess.run([*prefix, "true"]).returncode == 0:
        return prefix
    pytest.skip("root here, and setpriv cannot drop the capability to read any file")


def test_an_unreadable_checkpoint_directory_for_real(stored, env, tmp_path):
    """The `jaxdl` command (jaxdl.load) on a run whose newest checkpoint's state directory may not be read."""
    prefix = _without_root_override()
    state = stored / "checkpoints" / "10" / "state"
    state.chmod(0)
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "jaxdl.commands", "export", str(stored), "--checkpoint",
                               "latest", "--out", str(tmp_path / "f.jax")], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    finally:
        state.chmod(0o755)
    assert done.returncode == 2, f"exited {done.returncode}\n{done.stderr[-3000:]}"
    line = one_error_line(done.stderr)
    assert line.startswith(f"error: checkpoint {stored}/checkpoints/10 cannot be read: Permission denied (EACCES) "
                           f"at {state}"), line
    assert saved_steps(stored) == [5, 10] and not (stored / "checkpoints.damaged").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS])
def test_a_full_or_read_only_disk_anywhere_is_one_line_and_exit_4(capsys, code):
    def main(argv):
        raise OSError(code, os.strerror(code), "/runs/x/metrics.jsonl")

    with pytest.raises(SystemExit) as e:
        cli.run(main, [])
    err = capsys.readouterr().err
    assert e.value.code == 4 and err.count("\n") == 1
    assert err.startswith(f"error: cannot write /runs/x/metrics.jsonl: {os.strerror(code)} ({errno.errorcode[code]})")


def test_write_failed_is_exit_4_and_other_os_errors_keep_their_traceback(capsys):
    def refused(argv):
        raise WriteFailed("cannot save checkpoint 3 to /x: No space left on device (ENOSPC); ...")

    with pytest.raises(SystemExit) as e:
        cli.run(refused, [])
    assert e.value.code == 4 and capsys.readouterr().err == "error: cannot save checkpoint 3 to /x: No space left " \
                                                            "on device (ENOSPC); ...\n"

    def bug(argv):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/x")

    with pytest.raises(FileNotFoundError):
        cli.run(bug, [])
