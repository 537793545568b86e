"""TensorBoard logs of a run, read back with TensorBoard's own reader: every step once (a resume
after a kill included), the test figures, the learning rate, the pictures, a sample's text, and a
jax.profiler trace with `--profile-steps`."""

import glob
import gzip
import json
import os
import shutil

import numpy as np
import pytest

from experiments import cnn, rnn
from jaxdl.train.metrics import read_events

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator
CNN = ["--image-size", "8", "--batch-size", "128", "--epochs", "2", "--log-every", "5"]  # 11 steps per epoch


def board(workdir):
    ea = EventAccumulator(os.path.join(workdir, "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def scalars(ea, tag):
    return [(e.step, e.value) for e in ea.Scalars(tag)]


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cnn")
    cnn.main([*CNN, "--workdir", str(workdir)])
    return workdir


def test_scalars_pictures_and_learning_rate(cnn_run):
    ea = board(cnn_run)
    loss = scalars(ea, "train/loss")
    assert [s for s, _ in loss] == list(range(1, 23))  # every step once
    events = read_events(os.path.join(cnn_run, "metrics.jsonl"))
    train = [e for e in events if e["split"] == "train"]
    test = [e for e in events if e["split"] == "test"]
    for epoch, e in enumerate(train):  # the per-step values average to the epoch's logged mean
        np.testing.assert_allclose(np.mean([v for _, v in loss[11 * epoch:11 * (epoch + 1)]]), e["loss"], rtol=1e-5)
    assert scalars(ea, "test/accuracy") == [(e["step"], pytest.approx(e["accuracy"], rel=1e-6)) for e in test]
    assert [v for _, v in scalars(ea, "train/learning_rate")] == pytest.approx([1e-3] * 22)
    speed = scalars(ea, "train/examples_per_sec")
    assert [s for s, _ in speed] == [11, 22] and all(v > 0 for _, v in speed)
    assert [(e.step, e.width > 100) for e in ea.Images("curves")] == [(11, True), (22, True)]
    assert [e.step for e in ea.Images("confusion_matrix")] == [22]


def test_a_resume_after_a_kill_logs_each_step_once(cnn_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(cnn_run, workdir)
    shutil.rmtree(workdir / "checkpoints" / "22")  # as if killed after logging steps 12-22, before saving 22
    cnn.main([*CNN, "--workdir", str(workdir)])  # resumes at step 11 and redoes 12-22
    assert len(glob.glob(str(workdir / "tensorboard" / "events.out.tfevents.*"))) == 2
    first, resumed = board(cnn_run), board(workdir)
    for tag in ("train/loss", "train/learning_rate", "test/loss", "test/accuracy"):
        assert scalars(resumed, tag) == scalars(first, tag)  # the same steps, once each, the same values (exact resume)
    assert [e.step for e in resumed.Images("curves")] == [11, 22]


def test_a_resume_in_the_middle_of_a_round_logs_each_step_once(cnn_run, tmp_path):
    """The killed run logged round 2 (steps 12-22) but saved only up to step 16: the resumed run logs
    round 2 again from its start (its steps 12-16 come from the checkpoint) and TensorBoard shows each once."""
    every = [*CNN, "--checkpoint-every", "4", "--keep-checkpoints", "10", "--workdir", str(tmp_path)]
    cnn.main(every)
    for step in ("20", "22"):
        shutil.rmtree(tmp_path / "checkpoints" / step)
    cnn.main(every)
    first, resumed = board(cnn_run), board(tmp_path)
    for tag in ("train/loss", "train/accuracy", "train/learning_rate", "test/accuracy"):
        assert scalars(resumed, tag) == scalars(first, tag)


def test_no_tensorboard_writes_none(tmp_path):
    cnn.main([*CNN, "--epochs", "1", "--no-tensorboard", "--workdir", str(tmp_path)])
    assert not os.path.exists(tmp_path / "tensorboard") and os.path.exists(tmp_path / "summary.json")


def test_profile_steps_traces_annotated_steps(tmp_path):
    cnn.main([*CNN, "--epochs", "1", "--profile-steps", "3", "--workdir", str(tmp_path)])
    [trace] = glob.glob(str(tmp_path / "tensorboard" / "plugins" / "profile" / "*" / "*.trace.json.gz"))
    assert glob.glob(os.path.join(os.path.dirname(trace), "*.xplane.pb"))  # what TensorBoard's profile tab reads
    with gzip.open(trace) as f:
        events = json.load(f)["traceEvents"]
    steps = sorted({e["args"]["step_num"] for e in events if e.get("name") == "train" and "step_num" in e.get("args", {})})
    assert steps == ["3", "4", "5"]  # after the compiling first step and one warm step


def test_a_language_model_logs_its_sample_as_text(tmp_path, corpus):
    rnn.main(["--hidden", "16", "--embed", "8", "--layers", "1", "--seq-len", "16", "--batch-size", "4",
              "--sample-length", "12", "--steps", "4", "--eval-every", "2", "--dataset", f"text:{corpus}",
              "--workdir", str(tmp_path)])
    ea = board(tmp_path)
    samples = ea.Tensors("text/sample/text_summary")
    assert [e.step for e in samples] == [2, 4]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sample"] in samples[-1].tensor_proto.string_val[0].decode()
    assert [s for s, _ in scalars(ea, "test/loss")] == [2, 4]


def test_a_run_with_tensorboard_logs_does_not_import_torch(tmp_path):
    """tensorboardX's package imports torch where it is installed (~2.5 s at each start); jaxdl's writer
    loads it without, in a fresh process, and still writes the events TensorBoard reads."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys; from experiments import mlp; mlp.main(['--task', 'xor', '--epochs', '2', '--workdir', sys.argv[1]]);"
            "print('torch' in sys.modules, 'tensorboardX' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "False True"
    assert scalars(board(str(tmp_path)), "train/loss")
