"""The whole nightly loop against a source that grows: a loopback HTTP server serves a CSV that gains one row a
night; 30 nights run with warm starts; the ledger, the realized errors, the "no new data" path and the stale-data
notification are checked against independent recomputations."""
import uuid

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.runtime import ledger

from .helpers import stored_events

pytestmark = pytest.mark.flow

NIGHTS, FIRST, H = 30, 370, 2


@pytest.fixture(scope="module")
def loop(sp500, harness, tmp_path_factory):
    """30 nights of the nightly flow, the served CSV one row longer each night; the state of everything after."""
    from flows.nightly import nightly
    from .helpers import Handler, Server
    import threading

    tail = pd.DataFrame({"ds": pd.to_datetime(sp500.dates[-(FIRST + NIGHTS):]),
                         "y": sp500.values[-(FIRST + NIGHTS):]})
    served = {"rows": FIRST}
    Handler.routes, Handler.hits = {"/sp500.csv": lambda n: (200, "text/csv", tail.iloc[:served["rows"]].to_csv(
        index=False, date_format="%Y-%m-%d").encode())}, {}
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = tmp_path_factory.mktemp("loop")
    overrides = dict(source=f"http://127.0.0.1:{server.server_address[1]}/sp500.csv", window=20, horizon=H,
                     test_size=30, hidden_size=6, epochs=6, warm_epochs=2, init="champion", seed=1,
                     stat_baselines="none", figures=False, checkpoint_every=0, score_nights=10, experiment="loop",
                     model_name=f"loop-{uuid.uuid4().hex[:8]}", ledger_url=f"sqlite:///{tmp / 'ledger.db'}")
    summaries = []
    for night in range(NIGHTS):
        served["rows"] = FIRST + night
        summaries.append(nightly(overrides=overrides))
    yield {"tail": tail, "served": served, "overrides": overrides, "summaries": summaries}
    server.shutdown()
    server.server_close()


def rows_of(loop) -> pd.DataFrame:
    engine = ledger.open_ledger(loop["overrides"]["ledger_url"])
    try:
        return ledger.read(engine, loop["overrides"]["model_name"])
    finally:
        engine.dispose()


def runs_of(loop) -> list:
    c = MlflowClient()
    exp = c.get_experiment_by_name("loop")
    return c.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=200)


def test_every_night_is_in_the_ledger_once_with_the_champion_of_that_night(loop):
    everything = rows_of(loop)
    rows = everything[everything["role"] == "candidate"]
    assert len(rows) == NIGHTS * H
    assert not rows.duplicated(["origin", "step"]).any()
    held = everything[everything["role"] == "champion"]     # from the second night on, the champion's forecasts too
    assert len(held) == (NIGHTS - 1) * H and not held.duplicated(["origin", "step"]).any()
    assert (held["model_version"].astype(int) < held["origin"].map(
        rows.groupby("origin")["model_version"].first()).astype(int)).all()     # an older version each night
    origins = sorted(rows["origin"].unique())
    assert [pd.Timestamp(o) for o in origins] == list(loop["tail"]["ds"].iloc[FIRST - 1:FIRST - 1 + NIGHTS])
    assert rows["model_version"].nunique() == NIGHTS      # one registered version a night


def test_nights_after_the_first_start_from_the_champion(loop):
    runs = [r for r in runs_of(loop) if r.data.tags.get("model_version")]
    assert len(runs) == NIGHTS
    assert runs[0].data.tags["init_warm"] == "False" and "has no champion yet" in runs[0].data.tags["init_from"]
    assert all(r.data.tags["init_warm"] == "True" and r.data.tags["init_from"].startswith("the champion v")
               for r in runs[1:])
    assert all(r.data.metrics["epochs_run"] == 2 for r in runs[1:]) and runs[0].data.metrics["epochs_run"] == 6


def test_the_realized_error_logged_equals_a_recomputation_from_the_ledger_and_the_source(loop):
    last = [r for r in runs_of(loop) if r.data.tags.get("model_version")][-1]
    tail = loop["tail"]
    known = tail.iloc[:FIRST + NIGHTS - 1]                 # what the last night's data held
    rows = rows_of(loop)
    rows = rows[(pd.to_datetime(rows["ds"]) <= known["ds"].iloc[-1]) & (rows["role"] == "candidate")]
    joined = rows.assign(ds=pd.to_datetime(rows["ds"])).merge(known, on="ds")
    at_origin = joined.merge(known.rename(columns={"ds": "origin", "y": "y_origin"}), on="origin")
    # a target the source never has (a market holiday the business-day calendar counts) stays unscored
    assert len(joined) == len(at_origin) >= 0.9 * ((NIGHTS - 1) * H - 1)    # 55 of the 57 matured targets
    assert joined["origin"].nunique() == last.data.metrics["realized_nights"]
    mae = np.mean(np.abs(joined["yhat"] - joined["y"]))
    naive = np.mean(np.abs(at_origin["y_origin"] - at_origin["y"]))
    assert last.data.metrics["realized_mae_all"] == pytest.approx(mae, rel=1e-12)
    assert last.data.metrics["realized_naive_mae_all"] == pytest.approx(naive, rel=1e-12)
    history = MlflowClient().get_metric_history(last.info.run_id, "realized_night_mae")
    assert len(history) == last.data.metrics["realized_nights"] and [m.step for m in history] == \
        list(range(1, len(history) + 1))


@pytest.mark.fault(fault="a source that stopped growing (its newest value is the last successful night's origin)",
                   did="the night ends Completed with 'no new data: …' (Prefect state message, MLflow tag `skipped`, "
                       "a Prefect event); with --max-staleness exceeded it fails and the notification block is told",
                   kept="the registry and the ledger as they were: nothing trained, registered or recorded twice")
def test_a_stalled_source_ends_the_night_without_training_and_a_stale_one_fails_and_notifies(loop, webhook, sink):
    from flows.nightly import nightly

    before = rows_of(loop)
    state = nightly(overrides=loop["overrides"], return_state=True)    # the source did not grow
    assert state.is_completed() and state.message.startswith("no new data: the newest value")
    summary = state.result()
    assert summary.status == "no new data"
    pd.testing.assert_frame_equal(rows_of(loop), before)               # nothing recorded twice
    skipped = MlflowClient().get_run(summary.run_id).data.tags
    assert skipped["skipped"] == "no new data" and "model_version" not in skipped
    (event,) = stored_events("nnforecast.data.not-advanced", f"nnforecast.model.{loop['overrides']['model_name']}")
    assert event.payload["message"] == state.message and event.payload["newest"] == str(loop["tail"]["ds"].iloc[-2].date())
    assert len(MlflowClient().search_model_versions(f"name = '{loop['overrides']['model_name']}'")) == NIGHTS
    stale = nightly(overrides={**loop["overrides"], "max_staleness": "3D", "notify": webhook}, return_state=True)
    assert stale.is_failed() and "the data is stale" in stale.message and "--max-staleness 3D" in stale.message
    assert len(sink[1].posts) == 1 and "the data is stale" in sink[1].posts[0]["body"]
    pd.testing.assert_frame_equal(rows_of(loop), before)


def test_after_enough_scored_nights_the_champion_is_chosen_on_realized_accuracy(loop):
    c = MlflowClient()
    name = loop["overrides"]["model_name"]
    runs = [r for r in runs_of(loop) if r.data.tags.get("model_version")]
    versions = {str(v.version): v for v in c.search_model_versions(f"name = '{name}'")}
    on_realized = [r for r in runs if versions[r.data.tags["model_version"]].tags.get("promoted_on")]
    assert on_realized and on_realized == runs[-len(on_realized):]     # from some night on, every night
    assert len(on_realized) < NIGHTS - 10                              # not before 10 nights had both scored
    last = runs[-1]
    # independently: the new versions' and the champions' forecasts of the same targets, scored with the source
    known = loop["tail"].iloc[:FIRST + NIGHTS - 1]
    rows = rows_of(loop).assign(ds=lambda f: pd.to_datetime(f["ds"])).merge(known, on="ds")
    pairs = rows[rows["role"] == "candidate"].merge(rows[rows["role"] == "champion"], on=["origin", "step"],
                                                     suffixes=("", "_held"))
    pairs = pairs[pairs["origin"].isin(sorted(pairs["origin"].unique())[-10:])]
    new, held = np.mean(np.abs(pairs["yhat"] - pairs["y"])), np.mean(np.abs(pairs["yhat_held"] - pairs["y"]))
    assert last.data.metrics["realized_paired_candidate_mae"] == pytest.approx(new, rel=1e-12)
    assert last.data.metrics["realized_paired_champion_mae"] == pytest.approx(held, rel=1e-12)
    assert last.data.tags["model_role"] == ("champion" if new < held else "challenger")


def test_the_readme_query_gives_the_realized_error_of_each_night(loop):
    import re
    from pathlib import Path

    from sqlalchemy import text

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("#### The forecast ledger"):]
    query = re.search(r"```sql\n(.*?)```", section, re.S).group(1).replace("nncore-forecaster",
                                                                             loop["overrides"]["model_name"])
    engine = ledger.open_ledger(loop["overrides"]["ledger_url"])
    try:
        with engine.connect() as conn:
            nights = pd.DataFrame(conn.execute(text(query)).fetchall(), columns=["origin", "mae", "naive_mae", "n"])
    finally:
        engine.dispose()
    last = [r for r in runs_of(loop) if r.data.tags.get("model_version")][-1]
    logged = MlflowClient().get_metric_history(last.info.run_id, "realized_night_mae")
    # the night's run logged the nights scored before it; the query sees the ones scored since too (none here:
    # the rerun and the stale night found nothing new), so the two agree night by night
    assert len(nights) == len(logged)
    np.testing.assert_allclose(nights["mae"], [m.value for m in sorted(logged, key=lambda m: m.step)], rtol=1e-12)
