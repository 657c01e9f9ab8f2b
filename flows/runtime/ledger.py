"""The forecast ledger: every published forecast in a SQL database, to be scored against what then happened.

One row per registered model name, model version, series, forecast origin (the last observed timestamp the
forecast was made from) and step: the target time ``ds``, the point forecast, the naive and seasonal naive
forecasts of the same target, the role (``candidate``: the version trained that night; ``champion``: what the
champion of that night forecast for the same targets from the same data) and the run that recorded it. Written through SQLAlchemy, so the same code
writes SQLite (the default: ``ledger.db`` beside the MLflow store) and PostgreSQL (``--ledger-url
postgresql+psycopg://user:${PGPASSWORD}@host/db``; ``${NAME}`` is read from the environment, and the password
never appears in logs or parameters).

Writes are idempotent and atomic: a night's rows replace any earlier rows of the same model name, series and
origin (a rerun of a night does not duplicate them), in one transaction, so a failure leaves the ledger as it
was. The schema is versioned (table ``ledger_schema``) and created or migrated by :func:`open_ledger`; a ledger
written by a newer version of the project is refused rather than misread.

Each night, before training, the forecasts whose target has since been observed get their ``actual`` value
(:func:`score`); realized errors are ``yhat - actual`` (and ``naive - actual``, ``snaive - actual``).

Query it with any SQL client, e.g. the last night's forecasts of one series::

    SELECT ds, yhat, naive, snaive, model_version FROM forecasts
    WHERE model_name = 'nncore-forecaster' AND unique_id = 'y' AND role = 'candidate'
      AND origin = (SELECT max(origin) FROM forecasts WHERE model_name = 'nncore-forecaster')
    ORDER BY step;

or the realized MAE of each night against the naive forecast's::

    SELECT origin, avg(abs(yhat - actual)) AS mae, avg(abs(naive - actual)) AS naive_mae, count(*) AS n
    FROM forecasts WHERE model_name = 'nncore-forecaster' AND role = 'candidate' AND actual IS NOT NULL
    GROUP BY origin ORDER BY origin;
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import (Column, DateTime, Float, Integer, MetaData, String, Table, bindparam, create_engine, delete,
                        func, insert, inspect, select, text, tuple_, update)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from flows.core.files import PROJECT_ROOT
from flows.core.sources import expand_env

SCHEMA_VERSION = 3

metadata = MetaData()
forecasts = Table(
    "forecasts", metadata,
    Column("model_name", String(250), primary_key=True),
    Column("model_version", String(50), primary_key=True),  # (in the key from schema version 3)
    Column("unique_id", String(250), primary_key=True),
    Column("origin", DateTime, primary_key=True),   # the last observed timestamp the forecast was made from
    Column("step", Integer, primary_key=True),       # 1 … horizon
    Column("ds", DateTime, nullable=False),          # the target time
    Column("yhat", Float, nullable=False),
    Column("naive", Float, nullable=False),          # the last value
    Column("snaive", Float),                         # the value one season before the target (none: too short)
    Column("role", String(16), nullable=False),      # candidate: the night's new version; champion: the champion's
    Column("run_id", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("actual", Float),                         # the observed value at ds, once it is (schema version 2)
    Column("scored_at", DateTime),                   # when it was joined (schema version 2)
)
schema = Table("ledger_schema", metadata, Column("version", Integer, primary_key=True),
               Column("applied_at", DateTime, nullable=False))

COLUMNS = [c.name for c in forecasts.columns]
#: keys per DELETE … IN (…): PostgreSQL's parser gives up between 6,000 and 8,000 (a night of 10,000 series)
KEYS_PER_DELETE = 1000


class LedgerError(RuntimeError):
    """The ledger cannot be opened, migrated or written: the night fails, naming the database."""


def default_url() -> str:
    """``$NNFORECAST_LEDGER_URL`` (``ops/services.py --db postgres`` sets it), else ``ledger.db`` beside a SQLite
    MLflow store, else in the project."""
    if os.environ.get("NNFORECAST_LEDGER_URL"):
        return os.environ["NNFORECAST_LEDGER_URL"]
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    folder = Path(tracking[len("sqlite:///"):]).parent if tracking.startswith("sqlite:///") else PROJECT_ROOT
    return f"sqlite:///{folder / 'ledger.db'}"


def shown(url: str) -> str:
    """The URL fit for logs: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"


def open_ledger(url: str | None) -> Engine:
    """Connect, create the schema or check its version; raises :class:`LedgerError` naming the database."""
    url = expand_env(url) if url else default_url()
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError) as e:
        raise LedgerError(f"ledger {shown(url)}: not a usable database URL ({type(e).__name__}: {e}); "
                          "give --ledger-url sqlite:///path/ledger.db or postgresql+psycopg://…") from None
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":   # two nights opening a new ledger at once: one creates it
                conn.execute(text("SELECT pg_advisory_xact_lock(7013370)"))
            metadata.create_all(conn)
            version = conn.execute(select(func.max(schema.c.version))).scalar()
            if version is None:
                conn.execute(insert(schema).values(version=SCHEMA_VERSION, applied_at=_now()))
            elif version > SCHEMA_VERSION:
                raise LedgerError(f"ledger {shown(url)}: schema version {version} was written by a newer version "
                                  f"of the project (this one reads version {SCHEMA_VERSION}); upgrade it")
            else:
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[v](conn)
                    conn.execute(insert(schema).values(version=v, applied_at=_now()))
    except SQLAlchemyError as e:
        engine.dispose()
        raise LedgerError(f"ledger {shown(url)}: cannot open it: {type(e).__name__}: {str(e).splitlines()[0]}") \
            from None
    return engine


def _add_columns(conn, *names: str) -> None:
    """Add columns of :data:`forecasts` that an older schema lacks (``ALTER TABLE … ADD COLUMN``, any dialect)."""
    have = {c["name"] for c in inspect(conn).get_columns("forecasts")}
    for name in names:
        if name not in have:
            kind = forecasts.c[name].type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE forecasts ADD COLUMN {name} {kind}"))


def _rebuild_with_roles(conn) -> None:
    """Version 3: the model version joins the key and each row has a role (the rows so far: the night's new version,
    ``candidate``), so the champion's forecasts of the same targets can sit beside them. A new table filled from the
    old one, then renamed (SQLite cannot change a primary key in place)."""
    new = forecasts.to_metadata(MetaData(), name="forecasts_v3")
    new.create(conn)
    kept = ", ".join(c for c in COLUMNS if c != "role")
    conn.execute(text(f"INSERT INTO forecasts_v3 ({kept}, role) SELECT {kept}, 'candidate' FROM forecasts"))
    conn.execute(text("DROP TABLE forecasts"))
    conn.execute(text("ALTER TABLE forecasts_v3 RENAME TO forecasts"))


#: schema version -> the step that brings the previous version's tables to it (in the caller's transaction)
MIGRATIONS = {
    2: lambda conn: _add_columns(conn, "actual", "scored_at"),   # realized values of matured forecasts
    3: _rebuild_with_roles,
}


def record(engine: Engine, rows: pd.DataFrame) -> int:
    """Write a night's forecasts (columns :data:`COLUMNS` but ``created_at`` and the scoring's), replacing earlier rows of the same
    model name, series and origin, in one transaction; returns the number of rows written."""
    if rows.empty:
        return 0
    rows = rows.assign(created_at=_now(), actual=np.nan, scored_at=None)
    rows = rows.assign(role=rows["role"].fillna("candidate") if "role" in rows else "candidate")[COLUMNS]
    records = [{k: _plain(v) for k, v in r.items()} for r in rows.to_dict(orient="records")]
    keys = sorted({(r["model_name"], r["unique_id"], r["origin"]) for r in records})
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":   # writers of the same night wait for each other, as on SQLite
                conn.execute(text("LOCK TABLE forecasts IN SHARE ROW EXCLUSIVE MODE"))
            for lo in range(0, len(keys), KEYS_PER_DELETE):
                conn.execute(delete(forecasts).where(tuple_(forecasts.c.model_name, forecasts.c.unique_id,
                                                            forecasts.c.origin).in_(keys[lo:lo + KEYS_PER_DELETE])))
            conn.execute(insert(forecasts), records)
    except SQLAlchemyError as e:
        raise LedgerError(f"ledger {shown(str(engine.url))}: writing {len(records)} forecasts failed, nothing "
                          f"written: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return len(records)


def score(engine: Engine, model_name: str, actuals: pd.DataFrame) -> int:
    """Join the unscored forecasts of ``model_name`` whose target has now been observed with ``actuals``
    (``unique_id, ds, y``): their ``actual`` and ``scored_at`` are set, in one transaction. Returns how many."""
    with engine.connect() as conn:
        pending = pd.DataFrame(conn.execute(
            select(forecasts.c.model_version, forecasts.c.unique_id, forecasts.c.origin, forecasts.c.step,
                   forecasts.c.ds)
            .where(forecasts.c.model_name == model_name, forecasts.c.actual.is_(None))).fetchall(),
            columns=["model_version", "unique_id", "origin", "step", "ds"])
    if pending.empty:
        return 0
    pending["ds"] = pd.to_datetime(pending["ds"])
    known = actuals.assign(unique_id=actuals["unique_id"].astype(str), ds=pd.to_datetime(actuals["ds"]))
    matured = pending.merge(known[["unique_id", "ds", "y"]], on=["unique_id", "ds"], how="inner")
    matured = matured[np.isfinite(matured["y"].to_numpy(dtype=float))]
    if matured.empty:
        return 0
    now = _now()
    updates = [{"m": model_name, "v": r.model_version, "u": r.unique_id, "o": _plain(r.origin), "s": int(r.step),
                "a": float(r.y), "t": now} for r in matured.itertuples(index=False)]
    statement = (update(forecasts).where(forecasts.c.model_name == bindparam("m"),
                                         forecasts.c.model_version == bindparam("v"),
                                         forecasts.c.unique_id == bindparam("u"), forecasts.c.origin == bindparam("o"),
                                         forecasts.c.step == bindparam("s"))
                 .values(actual=bindparam("a"), scored_at=bindparam("t")))
    try:
        with engine.begin() as conn:
            conn.execute(statement, updates)
    except SQLAlchemyError as e:
        raise LedgerError(f"ledger {shown(str(engine.url))}: scoring {len(updates)} forecasts failed, nothing "
                          f"written: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return len(updates)


def origins(engine: Engine, model_name: str) -> pd.DataFrame:
    """The forecast origins (nights) of ``model_name`` in the ledger and the run that recorded each, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(forecasts.c.origin, func.min(forecasts.c.run_id))   # one run records a night
                            .where(forecasts.c.model_name == model_name).group_by(forecasts.c.origin)
                            .order_by(forecasts.c.origin)).fetchall()
    return pd.DataFrame({"origin": pd.to_datetime([r[0] for r in rows]), "run_id": [r[1] for r in rows]})


def read(engine: Engine, model_name: str | None = None) -> pd.DataFrame:
    """The ledger's rows (of one model name), by model, series, origin and step."""
    query = select(forecasts).order_by(forecasts.c.model_name, forecasts.c.unique_id, forecasts.c.origin,
                                       forecasts.c.step, forecasts.c.role)
    if model_name is not None:
        query = query.where(forecasts.c.model_name == model_name)
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).fetchall(), columns=COLUMNS)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _plain(v):
    """NumPy and pandas scalars as the Python values a DB driver takes (NaN -> NULL)."""
    if isinstance(v, (np.datetime64, pd.Timestamp)):
        return pd.Timestamp(v).to_pydatetime()
    if isinstance(v, (np.floating, float)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v
