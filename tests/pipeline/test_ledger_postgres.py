"""The forecast ledger on PostgreSQL: the behaviours of test_ledger.py against a real server (``postgres_url``).

Each test gets a fresh database on the session's server, so the schema is created (or migrated) from nothing.
"""
import re
import uuid

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from flows.runtime import ledger

from .test_ledger import night


@pytest.fixture
def ledger_url(postgres_url):
    """The URL of an empty database of its own, dropped after the test."""
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:   # WITH (FORCE): an engine the test left open does not keep it
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    finally:
        admin.dispose()


def test_the_schema_is_created_once_and_versioned(ledger_url):
    ledger.open_ledger(ledger_url).dispose()
    engine = ledger.open_ledger(ledger_url)     # a second open keeps the schema and its one version row
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version FROM ledger_schema")).fetchall() == [(ledger.SCHEMA_VERSION,)]
            kinds = dict(conn.execute(text("SELECT column_name, data_type FROM information_schema.columns "
                                           "WHERE table_name = 'forecasts'")).fetchall())
        assert kinds["origin"] == kinds["ds"] == kinds["scored_at"] == "timestamp without time zone"
        assert kinds["yhat"] == kinds["actual"] == "double precision"
        assert ledger.read(engine).empty
    finally:
        engine.dispose()


# the tables as schema version 1 of the project created them on PostgreSQL (SQLAlchemy's DDL for its columns)
V1 = ["""CREATE TABLE forecasts (model_name VARCHAR(250) NOT NULL, unique_id VARCHAR(250) NOT NULL,
origin TIMESTAMP WITHOUT TIME ZONE NOT NULL, step INTEGER NOT NULL, ds TIMESTAMP WITHOUT TIME ZONE NOT NULL,
yhat FLOAT NOT NULL, naive FLOAT NOT NULL, snaive FLOAT, model_version VARCHAR(50) NOT NULL,
run_id VARCHAR(64) NOT NULL, created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, PRIMARY KEY (model_name, unique_id, origin, step))""",
      "CREATE TABLE ledger_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMP WITHOUT TIME ZONE NOT NULL)",
      "INSERT INTO ledger_schema VALUES (1, '2026-11-01')",
      ("INSERT INTO forecasts VALUES ('m', 'a', '2020-01-10 00:00:00', 1, '2020-01-11 00:00:00', 5.0, 4.0, NULL, "
       "'1', 'r1', '2026-11-01 00:00:00')")]


def test_a_version_1_ledger_is_migrated_in_place_and_keeps_its_rows(ledger_url):
    v1 = create_engine(ledger_url)
    with v1.begin() as conn:
        for statement in V1:
            conn.execute(text(statement))
    v1.dispose()
    engine = ledger.open_ledger(ledger_url)
    try:
        with engine.connect() as conn:
            versions = [v for v, in conn.execute(text("SELECT version FROM ledger_schema ORDER BY version"))]
        assert versions == list(range(1, ledger.SCHEMA_VERSION + 1))     # each migration once, in order
        rows = ledger.read(engine)
        assert len(rows) == 1 and rows["yhat"][0] == 5.0 and rows["actual"].isna().all()
        assert rows["origin"][0] == pd.Timestamp("2020-01-10")
        actuals = pd.DataFrame({"unique_id": ["a"], "ds": [pd.Timestamp("2020-01-11")], "y": [6.0]})
        assert ledger.score(engine, "m", actuals) == 1 and ledger.read(engine)["actual"][0] == 6.0
        ledger.open_ledger(ledger_url).dispose()   # opening again migrates nothing more
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM ledger_schema")).scalar() == ledger.SCHEMA_VERSION
    finally:
        engine.dispose()


def test_scoring_joins_only_the_forecasts_whose_target_was_observed(ledger_url):
    engine = ledger.open_ledger(ledger_url)
    try:
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
    finally:
        engine.dispose()


def test_a_rerun_of_a_night_replaces_its_rows_and_other_nights_stay(ledger_url):
    engine = ledger.open_ledger(ledger_url)
    try:
        assert ledger.record(engine, night()) == 6
        assert ledger.record(engine, night(origin="2020-01-11")) == 6
        assert ledger.record(engine, night(version="2", yhat=np.full(6, 9.0))) == 6     # the first night, rerun
        rows = ledger.read(engine, "m")
        assert len(rows) == 12 and not rows.duplicated(["unique_id", "origin", "step"]).any()
        first = rows[rows["origin"] == pd.Timestamp("2020-01-10")]
        assert (first["yhat"] == 9.0).all() and (first["model_version"] == "2").all()
        assert rows["snaive"].isna().all() and (rows["naive"] == 1.0).all()
        assert ledger.record(engine, night(model="other")) == 6 and len(ledger.read(engine)) == 18
    finally:
        engine.dispose()


def test_a_failed_write_leaves_the_ledger_as_it_was_and_hides_the_password(ledger_url):
    password = make_url(ledger_url).password
    engine = ledger.open_ledger(ledger_url)
    try:
        ledger.record(engine, night())
        ledger.record(engine, night(origin="2020-01-11"))
        before = ledger.read(engine)
        # the rerun of the first night (its delete runs first) with a NULL in a NOT NULL column
        bad = night(version="2", yhat=np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0]))
        named = re.escape(make_url(ledger_url).render_as_string(hide_password=True))
        with pytest.raises(ledger.LedgerError, match=rf"ledger {named}: writing 6 forecasts failed, nothing written: "
                                                     r"IntegrityError") as e:
            ledger.record(engine, bad)
        assert ":***@" in str(e.value) and password not in str(e.value)
        pd.testing.assert_frame_equal(ledger.read(engine), before)    # created_at too: the old rows themselves
    finally:
        engine.dispose()


def test_a_wrong_password_is_refused_and_not_shown(ledger_url):
    wrong = make_url(ledger_url).set(password="wrong-s3cret")
    with pytest.raises(ledger.LedgerError, match=rf"ledger {re.escape(wrong.render_as_string(hide_password=True))}: "
                                                 r"cannot open it: OperationalError") as e:
        ledger.open_ledger(wrong.render_as_string(hide_password=False))
    assert "password authentication failed" in str(e.value)
    assert "s3cret" not in str(e.value) and make_url(ledger_url).password not in str(e.value)


def test_timestamps_round_trip_exactly_and_read_as_on_sqlite(ledger_url, tmp_path):
    """What the nightly flow and the backfill do with the ledger's rows does not depend on the database: the same
    night reads back identically (values and dtypes) from PostgreSQL and SQLite, to the second, and its origins
    compare equal to the pandas timestamps the flow looks them up with."""
    rows = night(origin="2020-01-10 13:45:07", uids=("shop-1", "shöp-2"))
    rows["ds"] = rows["ds"] + pd.Timedelta(seconds=1)          # targets a second past the day, like the source's
    rows["snaive"] = np.linspace(-1.5, 1e-9, len(rows))
    read = {}
    for url in (ledger_url, f"sqlite:///{tmp_path / 'ledger.db'}"):
        engine = ledger.open_ledger(url)
        try:
            ledger.record(engine, rows)
            read[url] = ledger.read(engine, "m").drop(columns="created_at")
            nights = ledger.origins(engine, "m")
        finally:
            engine.dispose()
        assert list(nights["origin"]) == [pd.Timestamp("2020-01-10 13:45:07")]
        assert pd.Timestamp("2020-01-10 13:45:07") in set(nights["origin"])      # the backfill's "already recorded"
    ours = read[ledger_url]
    assert ours["origin"].dtype.kind == ours["ds"].dtype.kind == "M"
    assert list(ours["ds"]) == list(rows["ds"]) and list(ours["unique_id"]) == ["shop-1"] * 3 + ["shöp-2"] * 3
    np.testing.assert_array_equal(ours["snaive"].to_numpy(), rows["snaive"].to_numpy())
    pd.testing.assert_frame_equal(ours, read[f"sqlite:///{tmp_path / 'ledger.db'}"])


def test_a_night_of_ten_thousand_series_is_written_and_rewritten(ledger_url):
    engine = ledger.open_ledger(ledger_url)      # one DELETE … IN of 10,000 keys overflows PostgreSQL's parser
    try:
        uids = [f"s{i}" for i in range(10_000)]
        assert ledger.record(engine, night(uids=uids, h=1)) == 10_000
        assert ledger.record(engine, night(version="2", uids=uids, h=1)) == 10_000
        rows = ledger.read(engine, "m")
        assert len(rows) == 10_000 and set(rows["model_version"]) == {"2"}
    finally:
        engine.dispose()


def test_two_writers_of_the_same_night_wait_for_each_other(ledger_url):
    import threading

    engine = ledger.open_ledger(ledger_url)
    uids = [f"s{i}" for i in range(300)]
    errors = []

    def write(version):
        try:
            ledger.record(engine, night(version=version, uids=uids, h=2))
        except ledger.LedgerError as e:
            errors.append(e)

    try:
        for _ in range(5):
            threads = [threading.Thread(target=write, args=(v,)) for v in ("1", "2")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rows = ledger.read(engine, "m")   # the last writer's night, whole; never both, never an error
            assert errors == [] and len(rows) == 600 and rows["model_version"].nunique() == 1
    finally:
        engine.dispose()
