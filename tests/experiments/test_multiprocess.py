"""Two processes on localhost (4 CPU devices each, gloo collectives) train the CNN together through
`jax.distributed` and end where one process does, each reading only its half of every batch; the
test starts and stops both itself."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from experiments import cnn
from jaxdl.data import batches, images
from tests.conftest import multi_device_xla_flags
from tests.experiments.workdir import latest_params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["--image-size", "8", "--batch-size", "64", "--epochs", "1", "--log-every", "5"]
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch_two(workdir, shares):
    """Both processes of experiments/cnn.py, each noting the rows it reads in shares/<i>.json."""
    env = {**os.environ, "XLA_FLAGS": multi_device_xla_flags(4),
           "JAX_PLATFORMS": "cpu"}
    flags = ["--coordinator", f"localhost:{_free_port()}", "--num-processes", "2", "--workdir", str(workdir)]
    shares.mkdir()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.experiments.record_shares", *ARGS, *flags, "--process-id",
                               str(i)], cwd=ROOT, env={**env, "SHARES_FILE": str(shares / f"{i}.json")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
        return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
    finally:
        for p in procs:  # a hung collective must not hang the suite
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_processes_of_four_devices_train_like_one_process(tmp_path):
    results = _launch_two(tmp_path / "two", tmp_path / "shares")
    for i, (_, out, err) in enumerate(results):
        assert "Traceback" not in err, f"process {i}:\n{err[-3000:]}"
    codes = [p for p, _, _ in results]
    (out0, err0), (out1, _) = [(o, e) for _, o, e in results]
    assert "cpu (" in out0 and "8 devices" in out0, out0[-2000:]  # one run over both processes' devices
    assert "[Epoch 1]" in out0 and "[Epoch 1]" not in out1  # process 0 alone reports
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    events = os.listdir(tmp_path / "two" / "tensorboard")
    assert len([e for e in events if e.startswith("events.out.tfevents")]) == 1, events  # process 0 alone writes
    one = cnn.main([*ARGS, "--workdir", str(tmp_path / "one")])
    assert codes == [0, 0] and summary["steps"] == one["steps"]
    two_params, one_params = latest_params(tmp_path / "two"), latest_params(tmp_path / "one")
    for a, b in zip(jax.tree.leaves(one_params), jax.tree.leaves(two_params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # 22 Adam steps; sums split 8 ways
    assert abs(summary["test_accuracy"] - one["test_accuracy"]) <= 1 / 360  # at most one test image flips
    # each process gathered only its 32 rows of each global batch of 64: disjoint halves of the batch
    # one process reads whole (the epoch's seeded permutation, batch by batch)
    read = [json.loads((tmp_path / "shares" / f"{i}.json").read_text()) for i in range(2)]
    n = len(images.load_images("digits").train)
    steps = summary["steps"]
    assert len(read[0]) == len(read[1]) == steps, [len(r) for r in read]
    for s in range(steps):
        whole = np.sort(batches.permutation(n, 0, 0)[s * 64:(s + 1) * 64])
        assert len(read[0][s]) == len(read[1][s]) == 32 and not set(read[0][s]) & set(read[1][s])
        np.testing.assert_array_equal(read[0][s] + read[1][s], whole)
