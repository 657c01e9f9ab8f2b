"""The backfill: past nights replayed as of each date, into the ledger and the registry; resumable; cold starts
concurrently, warm starts one after another."""
import sys
import uuid

import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.runtime import ledger

pytestmark = pytest.mark.flow

H = 2


@pytest.fixture(scope="module")
def source(sp500, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backfill")
    tail = pd.DataFrame({"ds": pd.to_datetime(sp500.dates[-300:]), "y": sp500.values[-300:]})
    tail.to_csv(tmp / "sp500.csv", index=False, date_format="%Y-%m-%d")
    return tmp, tail


def settings(source, **more):
    tmp, _ = source
    name = f"bf-{uuid.uuid4().hex[:8]}"
    return dict(source=str(tmp / "sp500.csv"), window=20, horizon=H, test_size=30, hidden_size=6, epochs=4, seed=1,
                checkpoint_every=0, experiment=name, model_name=name, ledger_url=f"sqlite:///{tmp / name}.db", **more)


def ledger_rows(overrides) -> pd.DataFrame:
    """The forecasts of the versions trained each night (not the champions' beside them)."""
    engine = ledger.open_ledger(overrides["ledger_url"])
    try:
        rows = ledger.read(engine, overrides["model_name"])
    finally:
        engine.dispose()
    return rows[rows["role"] == "candidate"].reset_index(drop=True)


def night_runs(overrides) -> list:
    c = MlflowClient()
    exp = c.get_experiment_by_name(overrides["experiment"])
    return c.search_runs([exp.experiment_id], "tags.model_version != ''", order_by=["attributes.start_time ASC"])


def test_a_cold_backfill_replays_each_night_as_of_its_date_and_resumes(source, harness):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.backfill import backfill

    _, tail = source
    overrides = settings(source)
    nights = list(tail["ds"].iloc[-8:-4])
    first = backfill(str(nights[0].date()), str(nights[-1].date()), overrides=overrides)
    assert first.replayed == [str(n) for n in nights] and first.skipped == []
    assert "dbutils" not in sys.modules, "a night's model logging left MLflow's stand-in module behind"
    rows = ledger_rows(overrides)
    assert len(rows) == 4 * H and sorted(pd.to_datetime(rows["origin"].unique())) == nights
    runs = night_runs(overrides)       # point in time: each night saw the data up to its date, nothing later
    assert sorted(r.data.tags["data_last_date"] for r in runs) == [str(n.date()) for n in nights]
    assert all(r.data.params["stat_baselines"] == "none" and r.data.params["as_of"] for r in runs)
    # every forecast matured by the end scored (as of the end: the last night's targets are after it)
    assert first.realized["n"].sum() == rows["actual"].notna().sum() == 5 and len(first.realized) == 3
    with get_client(sync_client=True) as client:
        (bar,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["backfill-progress"])),
                                       limit=1, sort="CREATED_DESC")
    assert bar.type == "progress" and float(bar.data) == 100.0

    again = backfill(str(nights[0].date()), str(tail["ds"].iloc[-3].date()), overrides=overrides)
    assert again.skipped == [str(n) for n in nights]                  # resumed: only the two new nights ran
    assert again.replayed == [str(n) for n in tail["ds"].iloc[-4:-2]]
    assert len(ledger_rows(overrides)) == 6 * H and len(night_runs(overrides)) == 6


def test_a_warm_backfill_runs_the_nights_in_order_each_from_the_last_champion(source, harness):
    from flows.backfill import backfill

    _, tail = source
    overrides = settings(source, init="champion", warm_epochs=1)
    nights = list(tail["ds"].iloc[-4:-1])
    summary = backfill(str(nights[0].date()), str(nights[-1].date()), overrides=overrides)
    assert summary.replayed == [str(n) for n in nights]
    runs = night_runs(overrides)
    assert [r.data.tags["data_last_date"] for r in runs] == [str(n.date()) for n in nights]   # oldest first
    assert [r.data.tags["init_warm"] for r in runs] == ["False", "True", "True"]
    assert [r.data.metrics["epochs_run"] for r in runs] == [4, 1, 1]


@pytest.mark.parametrize("argv,message", [
    (["--start", "notadate", "--end", "2008-04-01"], "parameter start='notadate': not a date"),
    (["--start", "2008-05-01", "--end", "2008-04-01"], "parameter start='2008-05-01': after end='2008-04-01'"),
    (["--start", "2008-03-01", "--end", "2008-04-01", "--as-of", "2008-01-01"], "the backfill sets it to each night"),
    (["--start", "2008-03-01", "--end", "2008-04-01", "--epochs", "0"], "parameter epochs=0"),
])
def test_bad_arguments_are_refused_before_any_work(argv, message, seeded_cache, capsys):
    from flows.backfill import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
