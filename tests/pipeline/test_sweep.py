"""The sweep flow: grid expansion, and one real run on a 2-worker Dask LocalCluster with nested MLflow runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.sweep import expand_grid, label, main

ROOT = Path(__file__).resolve().parents[2]


def test_expand_grid_validates_every_configuration_before_any_work():
    grid = {"model": ["rnn", "mlp"], "hidden_size": [4, 8]}
    configs = expand_grid(grid, overrides={"window": 20})
    assert [label(c, grid) for c in configs] == ["model=rnn hidden_size=4", "model=rnn hidden_size=8",
                                                 "model=mlp hidden_size=4", "model=mlp hidden_size=8"]
    assert all(c.windows.window == 20 for c in configs)
    with pytest.raises(ValueError, match="unknown parameter 'hiden'"):
        expand_grid({"hiden": [1]})
    with pytest.raises(ValueError, match="model"):
        expand_grid({"model": ["rnn", "transformer"]})
    with pytest.raises(ValueError, match="non-empty list"):
        expand_grid({"model": []})
    with pytest.raises(ValueError, match="same configuration twice"):
        expand_grid({"model": ["rnn", "rnn"]})


def test_cli_rejects_bad_grids_before_any_work(capsys):
    assert main(["--grid", "window=0,20"]) == 2
    assert "window" in capsys.readouterr().err
    assert main(["--grid", "model"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


@pytest.mark.flow
def test_sweep_on_a_two_worker_local_cluster(seeded_cache):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "flows.sweep", "--grid", "model=rnn,mlp", "--set", "n_values=900", "--set", "window=20",
         "--set", "test_size=60", "--set", "hidden_size=4", "--set", "epochs=3", "--folds", "2", "--workers", "2",
         "--experiment", "sweep-test"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "best: model=" in out.stdout
    assert "Worker process still alive" not in out.stdout + out.stderr  # workers exit within the nanny's grace

    from mlflow import MlflowClient

    c = MlflowClient()
    exp = c.get_experiment_by_name("sweep-test")
    runs = c.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["model=mlp", "model=rnn"]
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    assert parent.data.params["folds"] == "2" and parent.data.params["configurations"] == "2"
    # the best configuration is the one with the lowest mean test MAE over the folds, whichever that is
    best = min(children, key=lambda r: r.data.metrics["mean_test_mae"])
    assert parent.data.tags["best_config"] == best.info.run_name and parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_mean_test_mae"] == best.data.metrics["mean_test_mae"]
    assert {"comparison.csv", "comparison.md", "comparison.png"} <= {a.path for a in c.list_artifacts(parent.info.run_id)}
    for child in children:
        m = child.data.metrics
        for key in ("mean_test_mae", "std_test_mae", "dm_p_value", "lag_copy_r1", "mean_coverage",
                    "mean_interval_width", "mean_naive_test_mae"):
            assert key in m, key
        assert 0 <= m["dm_p_value"] <= 1 and 0 <= m["mean_coverage"] <= 1
        history = c.get_metric_history(child.info.run_id, "test_mae")
        assert sorted(h.step for h in history) == [0, 1]  # one value per fold
        assert child.data.params["model"] in {"rnn", "mlp"} and child.data.params["folds"] == "2"
    # both configurations were backtested on the same folds: the naive baseline agrees
    naive = {round(r.data.metrics["mean_naive_test_mae"], 9) for r in children}
    assert len(naive) == 1
