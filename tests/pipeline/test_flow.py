"""The whole nightly flow on a short configuration, under a Prefect test harness, with a real MLflow store."""
import time

import numpy as np
import pytest

pytestmark = pytest.mark.flow

SHORT = dict(source="sp500", n_values=900, window=20, test_size=60, hidden_size=6, epochs=4, lr=0.01, seed=1,
             log_every=2, experiment="flow-test", model_name="flow-test-model")


@pytest.fixture(scope="module")
def first_run(harness, seeded_cache):
    from flows.nightly import nightly

    state = nightly(overrides=SHORT, return_state=True)
    assert state.is_completed(), state
    return state


STAGES = ["champion_forecast", "check_data_advanced", "evaluate_model", "load_series", "log_results", "make_windows",
          "open_forecast_ledger", "publish_model", "record_forecasts", "score_forecasts", "train_model", "write_report"]


def test_flow_runs_its_stages(first_run):
    from prefect import get_client

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(first_run.state_details.flow_run_id)
        only_this = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        # task-run states reach the API through events, processed asynchronously: wait for them
        deadline = time.monotonic() + 60
        while True:
            task_runs = client.read_task_runs(flow_run_filter=only_this)
            if (len(task_runs) == len(STAGES) and all(tr.state and tr.state.is_final() for tr in task_runs)) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    names = sorted(tr.name.rsplit("-", 1)[0] for tr in task_runs)
    assert names == STAGES
    assert all(tr.state.is_completed() for tr in task_runs)


def test_mlflow_run_has_params_epoch_metrics_final_metrics_tags_and_figures(first_run):
    from mlflow import MlflowClient

    from flows.runtime import tracking

    summary = first_run.result()
    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["window"] == "20" and run.data.params["epochs"] == "4" and run.data.params["model"] == "rnn"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    for name in ("val_loss", "grad_norm"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 4
    for prefix in ("test_", "carried_test_", "naive_test_", "drift_test_"):
        for metric in ("mse", "rmse", "mae", "mape", "smape", "mase", "directional_accuracy"):
            assert np.isfinite(run.data.metrics[prefix + metric]), prefix + metric
    assert run.data.metrics["test_mae"] == pytest.approx(summary.test_mae)
    assert run.data.metrics["naive_test_mase"] == pytest.approx(1.0)
    tags = run.data.tags
    assert tags["data_sha256"] == "80c6aeb546bad43fb68b2facdb1972c2693e565838d45d8fe0eae0715f177c32"
    assert tags["kernel_backend"] in ("numpy", "cython") and tags["code_version"]
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {"figures/series.png", "figures/test_forecast.png", "figures/loss_curves.png",
                       "figures/residuals.png"}


def test_model_is_registered_as_champion_and_reproduces_the_forecast(first_run):
    import mlflow

    from flows.runtime import tracking

    summary = first_run.result()
    tracking.client()
    mv = mlflow.MlflowClient().get_model_version_by_alias(SHORT["model_name"], "champion")
    assert str(mv.version) == summary.version and summary.status == "champion"
    model = mlflow.pyfunc.load_model(f"models:/{SHORT['model_name']}@champion")
    from flows.core.config import DataSpec
    from flows.core.ingest import load_series

    values = load_series(DataSpec()).values
    forecast = model.predict(values[-SHORT["window"]:][None, :])
    np.testing.assert_allclose(forecast[0], summary.forecast.values, rtol=1e-6)


def test_report_and_config_artifacts(first_run):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        only_this = FlowRunFilter(id=FlowRunFilterId(any_=[first_run.state_details.flow_run_id]))
        artifacts = {a.key: a for a in client.read_artifacts(flow_run_filter=only_this)}
    report = artifacts["nightly-report"].data
    assert "| naive (tomorrow = today) |" in report and "data:image/png;base64," in report
    assert f"`{SHORT['model_name']}` version {first_run.result().version} is the **champion**" in report
    # every parameter of the run, resolved, with where its value came from
    from flows.core.config import PARAMETERS

    rows = {r["parameter"]: r for r in __import__("json").loads(artifacts["run-config"].data)}
    assert set(rows) == set(PARAMETERS)
    assert rows["window"]["value"] == "20" and rows["window"]["from"] == "given"
    assert rows["dtype"]["value"] == "'float32'" and rows["dtype"]["from"] == "default"
    bar = artifacts["training-progress"]       # moved every --log-every epochs, full at the end
    assert bar.type == "progress" and float(bar.data) == 100.0 and bar.description.startswith("epochs trained: 4 of 4")


def test_a_worse_model_becomes_challenger_and_the_champion_stays(first_run):
    """The second model cannot be better: one epoch at a learning rate of 1e-6 leaves its initial weights,
    and on levels (min-max scaled prices) those forecast far from the prices; the champion must not move."""
    from flows.nightly import nightly
    from flows.runtime import tracking

    first = first_run.result()
    second = nightly(overrides={**SHORT, "epochs": 1, "lr": 1e-6, "target": "level", "seed": 9})
    assert second.test_mae > 2 * first.test_mae  # the premise: clearly worse
    assert second.status == "challenger" and second.previous_version == first.version
    champion = tracking.client().get_model_version_by_alias(SHORT["model_name"], "champion")
    assert str(champion.version) == first.version


def test_failed_flow_marks_the_mlflow_run_failed_and_registers_nothing(harness, seeded_cache, tmp_path):
    from mlflow import MlflowClient

    from flows.runtime import tracking
    from flows.nightly import nightly

    bad = tmp_path / "bad.csv"
    bad.write_text("ds,y\n2020-01-01,1\n2020-01-02,oops\n")
    state = nightly(overrides={**SHORT, "source": str(bad), "model_name": "never-registered"}, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert f"{bad} line 3: value 'oops' in column 'y' is not a number" == str(error)
    client = MlflowClient(tracking.tracking_uri())
    assert not client.search_registered_models(filter_string="name='never-registered'")
    runs = client.search_runs([client.get_experiment_by_name("flow-test").experiment_id],
                              order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FAILED"


@pytest.mark.flow
def test_no_stage_tries_to_hash_its_inputs(harness, seeded_cache, monkeypatch):
    """A trained GRU's compiled layer does not pickle: with Prefect's default cache policy every stage that takes
    the model logged 'Error encountered when computing cache key' and a traceback, on every night."""
    import logging

    from flows.nightly import nightly

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.ERROR)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(seeded_cache))
    collect = Collect()
    prefect_log = logging.getLogger("prefect")   # Prefect's loggers do not propagate to the root
    prefect_log.addHandler(collect)
    try:
        state = nightly(overrides=dict(model="gru", n_values=600, window=10, test_size=20, hidden_size=4, epochs=1,
                                       experiment="no-cache", model_name="no-cache", stat_baselines="none"),
                        return_state=True)
    finally:
        prefect_log.removeHandler(collect)
    assert state.is_completed(), state
    assert not [m for m in collect.messages if "cache key" in m], collect.messages
