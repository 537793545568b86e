"""Runs experiments/cnn.py (argv as given) and writes, to $SHARES_FILE, the example indices this
process gathered for each training batch: what the two-process test compares between processes."""

import json
import os
import runpy
import sys

import numpy as np

from jaxdl.data import batches

read: list[list[int]] = []
whole = batches._gather


def recording(arrays, batch_size):
    gather = whole(arrays, batch_size)

    def gather_and_note(idx):
        read.append(np.sort(idx)[batches.local_share(batch_size)].tolist())
        return gather(idx)
    return gather_and_note


batches._gather = recording
sys.argv = ["experiments/cnn.py", *sys.argv[1:]]
try:
    runpy.run_path("experiments/cnn.py", run_name="__main__")
finally:
    with open(os.environ["SHARES_FILE"], "w") as f:
        json.dump(read, f)
