"""The forecast ledger: versioned schema, idempotent and atomic writes, and the nightly flow's rows."""
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from flows.runtime import ledger


def night(model="m", version="1", origin="2020-01-10", uids=("a", "b"), h=3, yhat=None):
    n = len(uids) * h
    return pd.DataFrame({
        "model_name": model, "unique_id": np.repeat(uids, h), "origin": pd.Timestamp(origin),
        "step": np.tile(np.arange(1, h + 1), len(uids)),
        "ds": np.tile(pd.date_range(pd.Timestamp(origin) + pd.Timedelta(days=1), periods=h), len(uids)),
        "yhat": np.arange(n, dtype=float) if yhat is None else yhat, "naive": 1.0, "snaive": np.nan,
        "model_version": version, "run_id": "r" + version})


def test_the_schema_is_created_once_and_versioned(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger.open_ledger(url).dispose()
    engine = ledger.open_ledger(url)       # a second open keeps the schema and its one version row
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM ledger_schema")).fetchall() == [(ledger.SCHEMA_VERSION,)]
    assert ledger.read(engine).empty


V1 = """CREATE TABLE forecasts (model_name VARCHAR(250) NOT NULL, unique_id VARCHAR(250) NOT NULL, origin DATETIME
NOT NULL, step INTEGER NOT NULL, ds DATETIME NOT NULL, yhat FLOAT NOT NULL, naive FLOAT NOT NULL, snaive FLOAT,
model_version VARCHAR(50) NOT NULL, run_id VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL,
PRIMARY KEY (model_name, unique_id, origin, step))"""


def test_a_version_1_ledger_is_migrated_in_place_and_keeps_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with create_engine(url).begin() as conn:     # the ledger as schema version 1 wrote it
        conn.execute(text(V1))
        conn.execute(text("CREATE TABLE ledger_schema (version INTEGER PRIMARY KEY, applied_at DATETIME NOT NULL)"))
        conn.execute(text("INSERT INTO ledger_schema VALUES (1, '2026-11-01')"))
        conn.execute(text("INSERT INTO forecasts VALUES ('m', 'a', '2020-01-10 00:00:00.000000', 1, "
                          "'2020-01-11 00:00:00.000000', 5.0, 4.0, NULL, '1', 'r1', '2026-11-01 00:00:00.000000')"))
    engine = ledger.open_ledger(url)
    with engine.connect() as conn:
        assert [v for v, in conn.execute(text("SELECT version FROM ledger_schema ORDER BY version"))] == [1, 2, 3]
    rows = ledger.read(engine)
    assert len(rows) == 1 and rows["yhat"][0] == 5.0 and rows["actual"].isna().all()
    assert rows["role"][0] == "candidate" and rows["model_version"][0] == "1"
    actuals = pd.DataFrame({"unique_id": ["a"], "ds": [pd.Timestamp("2020-01-11")], "y": [6.0]})
    assert ledger.score(engine, "m", actuals) == 1 and ledger.read(engine)["actual"][0] == 6.0
    ledger.open_ledger(url).dispose()   # opening again migrates nothing more
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ledger_schema")).scalar() == 3


def test_a_night_holds_the_new_version_and_the_champion_and_a_rerun_replaces_both(tmp_path):
    engine = ledger.open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    both = pd.concat([night(version="2"), night(version="1", yhat=np.full(6, 7.0)).assign(role="champion",
                                                                                          run_id="r2")])
    assert ledger.record(engine, both) == 12
    rows = ledger.read(engine, "m")
    assert sorted(rows.groupby("role")["model_version"].first().items()) == [("candidate", "2"), ("champion", "1")]
    actuals = pd.DataFrame({"unique_id": ["a"], "ds": [pd.Timestamp("2020-01-11")], "y": [6.0]})
    assert ledger.score(engine, "m", actuals) == 2                  # the target of both forecasts
    assert ledger.record(engine, night(version="3")) == 6           # the night rerun: both replaced
    rows = ledger.read(engine, "m")
    assert len(rows) == 6 and set(rows["model_version"]) == {"3"} and set(rows["role"]) == {"candidate"}


def test_scoring_joins_only_the_forecasts_whose_target_was_observed(tmp_path):
    engine = ledger.open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record(engine, night())                          # targets 01-11 … 01-13 of a and b
    ledger.record(engine, night(model="other"))
    actuals = pd.DataFrame({"unique_id": ["a", "a", "b", "c"], "y": [10.0, 11.0, np.nan, 1.0],
                            "ds": pd.to_datetime(["2020-01-11", "2020-01-12", "2020-01-11", "2020-01-11"])})
    assert ledger.score(engine, "m", actuals) == 2          # b's value is missing, c has no forecast
    rows = ledger.read(engine, "m").set_index(["unique_id", "step"])
    assert rows.loc[("a", 1), "actual"] == 10.0 and rows.loc[("a", 2), "actual"] == 11.0
    assert rows["actual"].notna().sum() == 2 and rows["scored_at"].notna().sum() == 2
    assert ledger.read(engine, "other")["actual"].isna().all()
    changed = actuals.assign(y=[99.0, 99.0, 3.0, 1.0])
    assert ledger.score(engine, "m", changed) == 1          # only b's newly observed value; a stays as scored
    assert ledger.read(engine, "m").set_index(["unique_id", "step"]).loc[("a", 1), "actual"] == 10.0
    ledger.record(engine, night(version="2", origin="2020-01-11"))
    nights = ledger.origins(engine, "m")
    assert list(nights["origin"]) == [pd.Timestamp("2020-01-10"), pd.Timestamp("2020-01-11")]
    assert list(nights["run_id"]) == ["r1", "r2"] and ledger.origins(engine, "nobody").empty


def test_a_rerun_of_a_night_replaces_its_rows_and_other_nights_stay(tmp_path):
    engine = ledger.open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert ledger.record(engine, night()) == 6
    assert ledger.record(engine, night(origin="2020-01-11")) == 6
    assert ledger.record(engine, night(version="2", yhat=np.full(6, 9.0))) == 6     # the first night, rerun
    rows = ledger.read(engine, "m")
    assert len(rows) == 12 and not rows.duplicated(["unique_id", "origin", "step"]).any()
    first = rows[rows["origin"] == pd.Timestamp("2020-01-10")]
    assert (first["yhat"] == 9.0).all() and (first["model_version"] == "2").all()
    assert rows["snaive"].isna().all() and (rows["naive"] == 1.0).all()
    assert ledger.record(engine, night(model="other")) == 6 and len(ledger.read(engine)) == 18


@pytest.mark.fault(fault="a ledger write that fails half-way (a forecast that is not a number)",
                   did="the night fails: 'ledger …: writing N forecasts failed, nothing written'",
                   kept="the ledger exactly as before: the rows that were there, no partial night")
def test_a_failed_write_leaves_the_ledger_as_it_was(tmp_path):
    engine = ledger.open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record(engine, night())
    before = ledger.read(engine)
    bad = night(version="2", yhat=np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0]))   # NULL in a NOT NULL column
    with pytest.raises(ledger.LedgerError, match=r"ledger sqlite:///.*ledger.db: writing 6 forecasts failed, nothing "
                                                 r"written: IntegrityError"):
        ledger.record(engine, bad)
    pd.testing.assert_frame_equal(ledger.read(engine).drop(columns="created_at"), before.drop(columns="created_at"))


@pytest.mark.parametrize("url,pattern", [
    ("postgresql+psycopg://ann:s3cret@127.0.0.1:1/forecasts",
     r"ledger postgresql\+psycopg://ann:\*\*\*@127.0.0.1:1/forecasts: (cannot open it|not a usable database URL)"),
    ("not a url", r"ledger <not a database URL>: not a usable database URL"),
    ("sqlite:////nonexistent-dir/ledger.db", r"ledger sqlite:////nonexistent-dir/ledger.db: cannot open it: "
                                             r"OperationalError"),
])
@pytest.mark.fault(fault="an unreachable or unusable ledger database (--ledger-url)",
                   did="the night fails before any work, naming the database (its password hidden)",
                   kept="everything: no training, no MLflow run, no registered version, no ledger row")
def test_an_unusable_ledger_is_named_without_its_password(url, pattern):
    with pytest.raises(ledger.LedgerError, match=pattern) as e:
        ledger.open_ledger(url)
    assert "s3cret" not in str(e.value)


def test_a_ledger_written_by_a_newer_version_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger.open_ledger(url).dispose()
    with create_engine(url).begin() as conn:
        conn.execute(text("INSERT INTO ledger_schema (version, applied_at) VALUES (99, '2030-01-01')"))
    with pytest.raises(ledger.LedgerError, match=r"schema version 99 was written by a newer version of the project"):
        ledger.open_ledger(url)


@pytest.mark.flow
def test_the_nightly_flow_records_its_forecasts_once_per_night(harness, tmp_path):
    from flows.nightly import nightly
    from flows.runtime import tracking

    from .test_panels import panel

    values, offsets, times, ids = panel(lengths=(60, 48))
    path = tmp_path / "shops.csv"
    pd.DataFrame({"shop": np.repeat(ids, np.diff(offsets)), "ds": times, "sales": values}).to_csv(path, index=False)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    over = dict(source=str(path), id_column="shop", value_column="sales", window=6, horizon=3, test_size=2,
                hidden_size=4, epochs=2, experiment="ledger-flow", model_name="ledger-model", ledger_url=url,
                stat_baselines="none")
    first = nightly(overrides=over)
    rows = ledger.read(ledger.open_ledger(url), "ledger-model")
    assert len(rows) == 2 * 3 and set(rows["model_version"]) == {first.version}
    np.testing.assert_allclose(rows["yhat"], first.forecast.yhat)
    assert list(rows["origin"].dt.strftime("%Y-%m-%d")) == ["2019-12-01"] * 3 + ["2018-12-01"] * 3
    np.testing.assert_allclose(rows["naive"], np.repeat([values[59], values[107]], 3))
    np.testing.assert_allclose(rows["snaive"], np.r_[values[48:51], values[96:99]])   # 12 months before each target
    assert tracking.client().get_run(first.run_id).data.tags["ledger_rows"] == "6"
    again = nightly(overrides={**over, "hidden_size": 5})   # the same night, another model: replaced, not added
    rows = ledger.read(ledger.open_ledger(url), "ledger-model")
    new, held = rows[rows["role"] == "candidate"], rows[rows["role"] == "champion"]
    assert len(new) == 6 and set(new["model_version"]) == {again.version} and again.version != first.version
    # beside it, the champion's forecast of the same targets from the same data: what it published itself
    assert len(held) == 6 and set(held["model_version"]) == {first.version}
    np.testing.assert_allclose(held["yhat"], first.forecast.yhat, rtol=1e-6)
