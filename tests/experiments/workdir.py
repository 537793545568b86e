"""Helpers the experiment tests share: the latest checkpoint's params, a workdir's bytes, the exit-2 checks."""

import os
import shutil

import jax
import orbax.checkpoint as ocp
import pytest

from jaxdl import cli


def latest_params(workdir):
    """The newest checkpoint's params, on this process's first device whatever mesh wrote them."""
    ckpt = os.path.join(workdir, "checkpoints")
    step = max(int(s) for s in os.listdir(ckpt) if s.isdigit())
    path = os.path.join(ckpt, str(step), "state")
    checkpointer = ocp.StandardCheckpointer()
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                          checkpointer.metadata(path).item_metadata.tree)
    return checkpointer.restore(path, target)["params"]


def snapshot(root):
    """Every file under root and its bytes."""
    return {os.path.join(d, f): open(os.path.join(d, f), "rb").read() for d, _, fs in os.walk(root) for f in fs}


def changes(before, after):
    """What differs between two snapshots, by name and size (not the bytes): '' when nothing does."""
    said = [f"added {p} ({len(after[p])} B)" for p in sorted(after.keys() - before.keys())]
    said += [f"removed {p} ({len(before[p])} B)" for p in sorted(before.keys() - after.keys())]
    said += [f"changed {p} ({len(before[p])} B -> {len(after[p])} B)" for p in sorted(before.keys() & after.keys())
             if before[p] != after[p]]
    return "; ".join(said)


def exits_2(main, argv, capsys):
    """`cli.run(main, argv)` must end with exit status 2 and one `error: ...` line; returns that line."""
    with pytest.raises(SystemExit) as e:
        cli.run(main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and "Traceback" not in err
    return err


def exits_2_untouched(main, argv, finished, tmp_path, capsys):
    """`exits_2` on a copy of the `finished` workdir (argv gets `--workdir COPY`), which must come out
    byte-identical; returns the error line."""
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    before = snapshot(workdir)
    capsys.readouterr()
    err = exits_2(main, [*argv, "--workdir", str(workdir)], capsys)
    after = snapshot(workdir)
    assert not changes(before, after)
    return err
