"""Make this folder's stored run (README.md says when; never rerun it to refresh a format's reference).

Runs the command below in a temporary workdir, keeps what `jaxdl.load` needs (model.json,
checkpoints/) in workdir/, and writes reference.json: the run's own final
figures (summary.json) and, for each checkpoint, the model's outputs on the xor inputs computed
from arrays read with orbax directly (not through jaxdl's checkpoint code).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
COMMAND = ["experiments/mlp.py", "--task", "xor", "--epochs", "2", "--steps-per-epoch", "5", "--hidden", "8"]


def main() -> None:
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from jaxdl.data.tabular import xor
    from jaxdl.models.mlp import MLP
    from jaxdl.train.checkpoint import CHECKPOINT_FORMAT

    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        subprocess.run([sys.executable, *COMMAND, "--workdir", run], cwd=ROOT, check=True)
        out = os.path.join(HERE, "workdir")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        shutil.copy(os.path.join(run, "model.json"), out)
        shutil.copytree(os.path.join(run, "checkpoints"), os.path.join(out, "checkpoints"))
        summary = json.load(open(os.path.join(run, "summary.json")))
    info = json.load(open(os.path.join(out, "model.json")))
    model = MLP(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["model"]["fields"].items()})
    x = xor().test["x"]
    predictions = {}
    for step in sorted(int(s) for s in os.listdir(os.path.join(out, "checkpoints")) if s.isdigit()):
        path = os.path.join(out, "checkpoints", str(step), "state")
        checkpointer = ocp.StandardCheckpointer()
        tree = checkpointer.metadata(path).item_metadata.tree
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree)
        params = checkpointer.restore(path, target)["params"]
        predictions[str(step)] = np.asarray(jax.nn.sigmoid(model.apply(params, x)))[:, 0].tolist()
    reference = {"format": CHECKPOINT_FORMAT, "command": " ".join(["python", *COMMAND, "--workdir", "DIR"]),
                 "inputs": x.tolist(), "predictions": predictions,
                 "summary": {k: summary[k] for k in ("steps", "test_loss", "test_accuracy")}}
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in reference.items()) + "\n}\n")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
