"""experiments/mlp.py: XOR needs a hidden non-linearity, manual = autodiff, ensembles = separate runs."""

import json

import jax
import numpy as np
import pytest

from experiments import mlp
from jaxdl import cli

XOR = ["--task", "xor", "--hidden", "8", "--epochs", "2", "--steps-per-epoch", "150", "--lr", "0.05"]


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_xor_is_solved_with_a_hidden_non_linearity(tmp_path, activation):
    summary = mlp.main([*XOR, "--activation", activation, "--workdir", str(tmp_path)])
    assert summary["test_accuracy"] == 1.0
    assert (tmp_path / "decision_boundary.png").stat().st_size > 5_000


def test_xor_is_not_solved_without_one(tmp_path):
    summary = mlp.main([*XOR, "--activation", "identity", "--workdir", str(tmp_path)])
    assert summary["test_accuracy"] <= 0.75  # a linear boundary gets at most 3 of the 4 points
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    # 2 -> 8 -> 1: forward 2 x (2 x 8 + 8 x 1), weight gradients as much again, the hidden layer's input gradient
    assert on_disk["model_flops_per_example"] == 2 * 2 * (2 * 8 + 8 * 1) + 2 * 8 * 1 and on_disk["mfu"] > 0


def test_sine_fit_and_manual_backprop_equal_autodiff(tmp_path):
    args = ["--task", "sine", "--epochs", "2", "--steps-per-epoch", "100", "--lr", "0.01"]
    auto = mlp.main([*args, "--workdir", str(tmp_path / "auto")])
    manual = mlp.main([*args, "--backprop", "manual", "--workdir", str(tmp_path / "manual")])
    assert auto["test_mse"] < 0.05 and (tmp_path / "auto" / "fit.png").exists()
    assert abs(manual["test_loss"] - auto["test_loss"]) <= 1e-4 * auto["test_loss"]


def _compiles(fn):
    """How many XLA compilations `fn` triggers."""
    events = []

    def listen(name, *args, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return len(events)


def test_ensemble_equals_separate_runs_and_compiles_once(tmp_path):
    args = ["--task", "digits", "--hidden", "32", "--epochs", "1", "--steps-per-epoch", "30", "--seed", "3"]
    separate = [mlp.main([*args[:-1], str(3 + i), "--workdir", str(tmp_path / f"s{i}")]) for i in range(4)]
    jax.clear_caches()
    n4 = _compiles(lambda: mlp.main([*args, "--ensemble", "4", "--workdir", str(tmp_path / "e4")]))
    jax.clear_caches()
    n2 = _compiles(lambda: mlp.main([*args, "--ensemble", "2", "--workdir", str(tmp_path / "e2")]))
    ens = json.loads((tmp_path / "e4" / "summary.json").read_text())
    np.testing.assert_allclose(ens["per_model_test_loss"], [s["test_loss"] for s in separate], rtol=1e-4)
    np.testing.assert_allclose(ens["per_model_test_accuracy"], [s["test_accuracy"] for s in separate], atol=1 / 360)
    assert ens["seeds"] == [3, 4, 5, 6] and ens["ensemble_std"] >= 0
    assert n4 > 0 and n4 == n2  # the number of compilations does not grow with the number of models


def test_learning_rate_sweep_equals_separate_runs(tmp_path):
    args = ["--task", "sine", "--hidden", "16", "--epochs", "1", "--steps-per-epoch", "40"]
    separate = [mlp.main([*args, "--lr", lr, "--workdir", str(tmp_path / lr)]) for lr in ("0.001", "0.03")]
    sweep = mlp.main([*args, "--lrs", "0.001,0.03", "--workdir", str(tmp_path / "sweep")])
    assert sweep["lrs"] == [0.001, 0.03] and sweep["seeds"] == [0, 0]
    np.testing.assert_allclose(sweep["per_model_test_loss"], [s["test_loss"] for s in separate], rtol=1e-4)
    assert separate[0]["test_loss"] != pytest.approx(separate[1]["test_loss"], rel=0.1)


def test_batch_norm_ensemble_trains_each_model_with_its_own_statistics(tmp_path):
    """--norm batch on digits: learns, and two models in one vmapped step end as two separate runs
    (params and running statistics)."""
    from tests.experiments.workdir import latest_params

    args = ["--task", "digits", "--hidden", "32", "--norm", "batch", "--epochs", "1", "--steps-per-epoch", "30",
            "--lr", "3e-3", "--seed", "3"]
    separate = [mlp.main([*args[:-1], str(3 + i), "--workdir", str(tmp_path / f"s{i}")]) for i in range(2)]
    ens = mlp.main([*args, "--ensemble", "2", "--workdir", str(tmp_path / "e2")])
    assert min(s["test_accuracy"] for s in separate) > 0.8
    np.testing.assert_allclose(ens["per_model_test_loss"], [s["test_loss"] for s in separate], rtol=1e-4)
    stacked = latest_params(tmp_path / "e2")
    for i in range(2):
        one = latest_params(tmp_path / f"s{i}")
        for a, b in zip(jax.tree.leaves(one["batch_stats"]), jax.tree.leaves(stacked["batch_stats"])):
            np.testing.assert_allclose(a, b[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("argv,match", [
    (["--activation", "swish2"], "unknown --activation"),
    (["--task", "parity"], "unknown --task"),
    (["--hidden", ""], "--hidden wants comma-separated widths"),
    (["--hidden", "64,0"], "widths must be >= 1"),
    (["--ensemble", "0"], "--ensemble must be >= 1"),
    (["--backprop", "numeric"], "--backprop must be autodiff or manual"),
    (["--lrs", "0.1,fast"], "--lrs wants comma-separated learning rates"),
    (["--lrs", "0.1,0.2", "--ensemble", "2"], "use one of them"),
    (["--lrs", "0.1,0.2", "--schedule", "cosine"], "--lrs needs --schedule constant"),
    (["--norm", "layer"], "unknown --norm 'layer'"),
    (["--norm", "batch", "--backprop", "manual"], "--backprop manual differentiates dense layers"),
    (["--norm", "batch", "--batch-size", "1"], "needs batches of at least 2"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as e:
        cli.run(mlp.main, [*argv, "--workdir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and match in err
    assert not any(tmp_path.iterdir())
