"""Ingestion: read a source into a :class:`~flows.core.panel.Panel` and validate it before anything else.

Layouts (pandas' conventions, the names Nixtla's libraries use by default):

* **a single series**: a time column and a value column (``ds, y``);
* **long** (``--id-column``): one row per series and timestamp, one or more id columns naming the
  series (joined with ``/``), the rows of a series in time order (series may interleave);
* **wide** (``--value-column a,b,c`` or ``*`` for every other column): one column per series, one
  row per timestamp; a series may start late or end early (empty cells before or after it).

CSV (read by pyarrow, the engine pandas uses, so a 10-million-row panel parses in seconds) and
Parquet (``.parquet``/``.pq``). Every failure raises :class:`~flows.core.sources.DataError`
naming the file, the line (CSV; the header is line 1) or row (Parquet), the series and timestamp
where that helps, the problem, and the flag that would fix it. When several rows are bad, the
first in the file is reported.

Frequency: ``--freq`` or inferred (:mod:`flows.core.calendar`); every timestamp must lie on its
grid, and a series may miss at most ``--max-gap`` periods in a row (default: 5 business days —
market holidays — for business-day series, none otherwise) unless ``--fill`` fills them.
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import calendar, covariates, sources
from .config import DataSpec
from .panel import FILLS, FutureRows, Panel
from .sources import DataError, expand_env, looks_like_html, redact

PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class Table:
    """The columns of a file as Arrow arrays, and where each row stands in it."""

    columns: dict[str, pa.ChunkedArray]
    where: np.ndarray    # (rows,) line (CSV) or row (Parquet) number of each row
    unit: str            # "line" or "row"


class _Problems:
    """The first bad row of each check; :meth:`raise_first` reports the earliest in the file."""

    def __init__(self, label: str, table: Table):
        self.label, self.table, self.found = label, table, []

    def add(self, bad: np.ndarray, message) -> None:
        """``bad``: a boolean mask over the rows; ``message(i)`` says what is wrong with row i."""
        idx = np.flatnonzero(bad)
        if idx.size:
            i = int(idx[np.argmin(self.table.where[idx])])
            self.found.append((int(self.table.where[i]), message(i)))

    def raise_first(self) -> None:
        if self.found:
            where, message = min(self.found, key=lambda f: f[0])
            raise DataError(f"{self.label} {self.table.unit} {where}: {message}")


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
def _header(text_head: str) -> list[str]:
    return [h.strip() for h in next(csv.reader(io.StringIO(text_head)))]


def read_csv(data: bytes, label: str) -> Table:
    """Every cell as text, with the file line of each row; blank lines skipped."""
    if not data.strip():
        raise DataError(f"{label}: the file is empty")
    if looks_like_html(data):
        raise DataError(f"{label}: the file is an HTML page, not CSV")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{label} line {line}: bytes that are not UTF-8 at byte offset {e.start}") from None
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    first = body.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    header = _header(first)
    bad, skipped = [], []

    def on_invalid(row) -> str:
        if row.text.strip():
            bad.append(row)
        else:
            skipped.append(row.number)
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(body),
        read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False))
    if bad:
        row = bad[0]
        raise DataError(f"{label} line {row.number}: expected {row.expected_columns} fields, got "
                        f"{row.actual_columns} ({row.text!r}; truncated or malformed line)")
    n = table.num_rows
    where = np.arange(2, n + 2)
    for line in sorted(skipped):  # a skipped whitespace-only line: the rows after it stand one line further down
        where[where >= line] += 1
    columns = {h: table.column(h) for h in header}
    blank = np.ones(n, dtype=bool)
    for col in columns.values():
        blank &= pc.equal(pc.utf8_trim_whitespace(col), "").to_numpy(zero_copy_only=False)
    if blank.any():  # blank lines (a line with only separators counts as blank too)
        keep = ~blank
        columns = {h: c.filter(pa.array(keep)) for h, c in columns.items()}
        where = where[keep]
    if len(where) == 0:
        raise DataError(f"{label}: the file has a header but no data rows")
    return Table(columns, where, "line")


def read_parquet(path, label: str) -> Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{label}: not a readable Parquet file ({e})") from None
    if table.num_rows == 0:
        raise DataError(f"{label}: the file has no rows")
    return Table({name: table.column(name) for name in table.column_names}, np.arange(1, table.num_rows + 1), "row")


# ----------------------------------------------------------------------------------------------
# Columns
# ----------------------------------------------------------------------------------------------
def _text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column as text (Parquet written by pandas stores large strings: one type for both)."""
    return col if pa.types.is_large_string(col.type) else pc.cast(col, pa.large_string())


def _numbers(col: pa.ChunkedArray, name: str, problems: _Problems):
    """Float values of a column, a mask of its empty cells, and ``raw(i)``: cell i as written (for messages).
    Bad cells are recorded in ``problems``."""
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        empty = np.isnan(values) & pc.is_null(col).to_numpy(zero_copy_only=False)
        text = pc.cast(col, pa.string())
    else:
        text = pc.utf8_trim_whitespace(_text(col))
        empty = pc.equal(text, "").to_numpy(zero_copy_only=False)
        try:
            values = pc.cast(pc.if_else(pc.equal(text, ""), "nan", text), pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            series = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
            values = np.array(pd.to_numeric(series, errors="coerce"), dtype=np.float64)
            unparsed = np.isnan(values) & ~empty & ~series.str.lower().isin(["nan", "+nan", "-nan"]).to_numpy()
            numeric_literal = unparsed & series.map(_parses_as_float).to_numpy(dtype=bool)
            values[numeric_literal] = [float(x) for x in series[numeric_literal]]
            problems.add(unparsed & ~numeric_literal,
                         lambda i: f"value {series.iloc[i]!r} in column {name!r} is not a number")
    def raw(i: int) -> str:
        return repr(text[int(i)].as_py())

    problems.add(~empty & ~np.isfinite(values), lambda i: f"value {raw(i)} in column {name!r} is not finite")
    return values, empty, raw


def _parses_as_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def _times(col: pa.ChunkedArray, name: str, problems: _Problems) -> np.ndarray:
    """Timestamps (datetime64[s]) of an ISO date/time column; unparseable cells are recorded."""
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        return pc.cast(col, pa.timestamp("s")).to_numpy(zero_copy_only=False).astype("datetime64[s]")
    text = pc.utf8_trim_whitespace(_text(col)).to_numpy(zero_copy_only=False)
    parsed = pd.to_datetime(pd.Series(text, dtype=object), format="ISO8601", errors="coerce", utc=True)
    times = parsed.dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    problems.add(np.isnat(times), lambda i: f"date {text[i]!r} is not an ISO date (YYYY-MM-DD[ HH:MM[:SS]]); "
                                            f"the time column is --date-column {name!r}")
    return times


def _missing_columns(label: str, header: list[str], wanted: list[str], flags: dict[str, str]) -> None:
    missing = [c for c in wanted if c not in header]
    if missing:
        hint = ""
        if len(header) == 1 and any(d in header[0] for d in ";\t|"):
            hint = " (the header is one field: is the file delimited by something other than ','?)"
        which = ", ".join(sorted({flags[c] for c in missing}))
        raise DataError(f"{label} line 1: missing column(s) {', '.join(map(repr, missing))}; the header has "
                        f"{header}{hint}; name the columns with {which}")


# ----------------------------------------------------------------------------------------------
# The panel
# ----------------------------------------------------------------------------------------------
def build_panel(table: Table, label: str, date_column: str, value_columns: list[str], id_columns: list[str],
                freq: str | None = None, max_gap: int | None = None, fill: str = "none", positive: bool = False,
                covariate_flags: dict[str, str] | None = None) -> tuple:
    """Validate ``table`` and arrange it as a panel: (ids, offsets, times, values, freq, values filled, covariates
    (N, C) or None). ``covariate_flags``: covariate column -> the flag that named it (for messages)."""
    header = list(table.columns)
    covariate_flags = covariate_flags or {}
    cov_columns = list(covariate_flags)
    if value_columns == ["*"]:
        value_columns = [h for h in header if h != date_column and h not in id_columns and h not in covariate_flags]
    flags = {date_column: "--date-column", **{c: "--value-column" for c in value_columns},
             **{c: "--id-column" for c in id_columns}, **covariate_flags}
    _missing_columns(label, header, [date_column, *value_columns, *id_columns, *cov_columns], flags)
    if cov_columns and len(value_columns) > 1:
        raise DataError(f"{label}: covariates ({', '.join(cov_columns)}) need one value column: a single series or "
                        f"the long format (--id-column), not a wide file of {len(value_columns)} series")
    problems = _Problems(label, table)
    times = _times(table.columns[date_column], date_column, problems)
    rows = np.arange(len(times))
    after = None
    if len(value_columns) == 1:  # one value column: a single series, or long format with id columns
        values, empty, raw = _numbers(table.columns[value_columns[0]], value_columns[0], problems)
        raws = [raw]
        if id_columns:
            key = _text(table.columns[id_columns[0]])
            for c in id_columns[1:]:
                key = pc.binary_join_element_wise(key, _text(table.columns[c]), pa.scalar("/", pa.large_string()))
            codes, ids = pd.factorize(pd.Series(key.to_numpy(zero_copy_only=False), dtype=object), sort=False)
            ids = np.asarray(ids, dtype=object)
        else:
            codes, ids = np.zeros(len(times), dtype=np.int64), np.array([value_columns[0]], dtype=object)
        ahead = [c for c in cov_columns if covariate_flags[c] == "--future-covariates"]
        trailing = np.zeros(len(times), dtype=bool)
        if ahead:   # rows after a series' last value: the known-in-advance covariates of the periods to forecast
            last_full = np.full(len(ids), -1)
            np.maximum.at(last_full, codes[~empty], rows[~empty])
            trailing = empty & (rows > last_full[codes])
        problems.add(empty & ~trailing, lambda i: f"missing value in column {value_columns[0]!r}")
        covs = []
        for c in cov_columns:   # every covariate validated like the target: numbers, finite, present
            cv, cempty, _ = _numbers(table.columns[c], c, problems)
            needed = cempty if c in ahead else cempty & ~trailing
            problems.add(needed, lambda i, c=c: f"missing value in covariate column {c!r} ({covariate_flags[c]})"
                         + (" (a row after the series' last value: the known-in-advance covariates of a period "
                            "to forecast)" if trailing[i] else ""))
            covs.append(cv)
        cov = np.stack(covs, axis=1) if covs else None
        where, columns_of = table.where, np.zeros(len(times), dtype=np.int64)
        if trailing.any():   # set aside; checked against the series' frequency below
            after = (codes[trailing], times[trailing], cov[trailing][:, [cov_columns.index(c) for c in ahead]],
                     where[trailing])
            keep = ~trailing
            values, times, codes, where, rows, cov = (values[keep], times[keep], codes[keep], where[keep], rows[keep],
                                                      cov[keep])
            columns_of = columns_of[keep]
    else:  # wide: one column per series; cells before a series starts or after it ends are empty
        parts = [_numbers(table.columns[c], c, problems) for c in value_columns]
        raws = [raw for _, _, raw in parts]
        values = np.concatenate([v for v, _, _ in parts])
        empty = np.concatenate([e for _, e, _ in parts])
        k = len(value_columns)
        codes = columns_of = np.repeat(np.arange(k), len(times))
        ids = np.array(value_columns, dtype=object)
        times, where, rows = np.tile(times, k), np.tile(table.where, k), np.tile(rows, k)
        grouped = empty.reshape(k, -1)
        inside = (np.cumsum(~grouped, axis=1) > 0) & (np.cumsum(~grouped[:, ::-1], axis=1)[:, ::-1] > 0)
        problems.table = Table({}, where, table.unit)
        problems.add((grouped & inside).ravel(), lambda i: f"missing value in column {value_columns[columns_of[i]]!r}")
        keep = ~empty
        values, times, codes, where, rows = values[keep], times[keep], codes[keep], where[keep], rows[keep]
        columns_of = codes
    problems.table = Table({}, where, table.unit)
    if positive:
        problems.add(np.isfinite(values) & (values <= 0),
                     lambda i: f"value {raws[columns_of[i]](rows[i])} in column {value_columns[columns_of[i]]!r} is "
                               "not positive; the 'return' target takes logarithms (use --target delta or level)")
    problems.raise_first()

    order = np.argsort(codes, kind="stable")          # series by series, each in file order
    times, values, codes, where = times[order], values[order], codes[order], where[order]
    cov = None if not cov_columns else cov[order]
    same = codes[1:] == codes[:-1]
    step = np.diff(times)
    many = len(ids) > 1
    prefix = (lambda j: f"series {ids[codes[j]]!r}: ") if many else (lambda j: "")
    unit = table.unit
    problems = _Problems(label, Table({}, where[1:], unit))
    problems.add(same & (step == np.timedelta64(0)),
                 lambda j: f"{prefix(j + 1)}duplicate date {_show(times[j + 1])} (also on {unit} {where[j]})")
    problems.add(same & (step < np.timedelta64(0)),
                 lambda j: f"{prefix(j + 1)}date {_show(times[j + 1])} comes before {_show(times[j])} on {unit} "
                           f"{where[j]}; dates must be sorted in increasing order"
                           f"{' within each series' if many else ''}")
    problems.raise_first()

    freq = freq or _infer(label, times, same)
    grid = calendar.parse_freq(freq)
    off_grid, missing = calendar.check_grid(times, same, grid)
    problems = _Problems(label, Table({}, where, unit))
    problems.add(off_grid, lambda i: f"{prefix(i)}{_show(times[i])} is not on the {grid.alias} grid "
                                     f"({grid.name}s); is the frequency right? (--freq)")
    problems.raise_first()
    allowed = (5 if grid.kind == "B" else 0) if max_gap is None else max_gap
    gaps = missing > 0
    if FILLS[fill] is None:
        problems = _Problems(label, Table({}, where[1:], unit))
        problems.add(missing > allowed,
                     lambda j: f"{prefix(j + 1)}{missing[j]} missing {grid.name}s between {_show(times[j])} "
                               f"({unit} {where[j]}) and {_show(times[j + 1])}; the series must be complete at "
                               f"frequency {grid.alias}: fill gaps with --fill ffill|interpolate, accept up to N "
                               f"missing with --max-gap N (now {allowed}), or give another --freq")
        problems.raise_first()
        filled = 0
    else:
        if cov is not None:   # the covariates filled the same way, column by column
            cov = np.stack([_fill(times, cov[:, k], codes, missing, gaps, freq, FILLS[fill])[1]
                            for k in range(cov.shape[1])], axis=1)
        times, values, codes, filled = _fill(times, values, codes, missing, gaps, freq, FILLS[fill])
    offsets = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(ids)))])
    future = None if after is None else _future_rows(label, unit, after, ids, times[offsets[1:] - 1], freq)
    return ids, offsets, calendar.compact_times(times), values, freq, filled, cov, future


def _future_rows(label, unit, after, ids, last, freq) -> FutureRows:
    """The rows after each series' last value, which must continue its frequency period by period."""
    codes, times, values, where = after
    order = np.argsort(codes, kind="stable")
    codes, times, values, where = codes[order], times[order], values[order], where[order]
    counts = np.bincount(codes, minlength=len(ids))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for s in np.flatnonzero(counts):
        expected = calendar.next_dates(last[s], int(counts[s]), freq).astype("datetime64[s]")
        got = times[offsets[s]:offsets[s + 1]]
        bad = np.flatnonzero(got != expected)
        if len(bad):
            j = offsets[s] + bad[0]
            raise DataError(f"{label} {unit} {where[j]}: {f'series {ids[s]!r}: ' if len(ids) > 1 else ''}date "
                            f"{_show(times[j])} "
                            f"in the rows after the series' last value ({_show(last[s])}) should be "
                            f"{_show(expected[bad[0]])}: those rows hold the known-in-advance covariates of the "
                            f"next periods, one per period at frequency {freq}")
    return FutureRows(offsets, calendar.compact_times(times), values)


def _show(t: np.datetime64) -> str:
    return str(t.astype("datetime64[D]")) if t == t.astype("datetime64[D]") else str(t)


def _infer(label: str, times: np.ndarray, same: np.ndarray) -> str:
    try:
        return calendar.infer_freq(times, same)
    except calendar.FrequencyError as e:
        raise DataError(f"{label}: {e}") from None


def _fill(times, values, codes, missing, gaps, freq, how):
    """Insert the missing periods of every gap, their values from ``how``."""
    offset = pd.tseries.frequencies.to_offset(freq)
    pieces_t, pieces_v, pieces_c, last = [], [], [], 0
    for j in np.flatnonzero(gaps):
        k = int(missing[j])
        new_t = [(pd.Timestamp(times[j]) + (m + 1) * offset).to_datetime64() for m in range(k)]
        pieces_t += [times[last:j + 1], np.array(new_t, dtype=times.dtype)]
        pieces_v += [values[last:j + 1], how(values[j], values[j + 1], k)]
        pieces_c += [codes[last:j + 1], np.full(k, codes[j])]
        last = j + 1
    if not pieces_t:
        return times, values, codes, 0
    pieces_t.append(times[last:])
    pieces_v.append(values[last:])
    pieces_c.append(codes[last:])
    return (np.concatenate(pieces_t), np.concatenate(pieces_v), np.concatenate(pieces_c),
            int(missing[gaps].sum()))


def load_series(spec: DataSpec, positive: bool = False) -> Panel:
    """Fetch (or reuse the cache for) ``spec.source`` and return the validated panel.

    ``positive`` rejects values ≤ 0 (the ``return`` target takes logarithms). ``${NAME}`` in a URL is
    replaced with the environment variable NAME (a token stays out of the run's parameters); the
    panel, messages and logs carry the URL with secrets redacted. A registered source's entry may
    name its columns and frequency; explicit values in ``spec`` other than the defaults win.
    """
    entry = sources.registered_sources().get(spec.source, {})
    date_column = spec.date_column if spec.date_column != "ds" else entry.get("date_column", "ds")
    value_column = spec.value_column if spec.value_column != "y" else entry.get("value_column", "y")
    id_column = spec.id_column or entry.get("id_column")
    freq = spec.freq or entry.get("freq")
    path, _ = sources.resolve_source(expand_env(spec.source))
    data = path.read_bytes()
    shown = redact(spec.source)
    label = str(path) if spec.source == str(path) else f"{shown} ({path})"
    if path.suffix.lower() in PARQUET_SUFFIXES:
        table = read_parquet(path, label)
    else:
        table = read_csv(data, label)
    cov_flags = {**{c: "--past-covariates" for c in covariates.names(spec.past_covariates)},
                 **{c: "--future-covariates" for c in covariates.names(spec.future_covariates)}}
    ids, offsets, times, values, freq, filled, cov, future = build_panel(
        table, label, date_column, [c.strip() for c in value_column.split(",")],
        [c.strip() for c in id_column.split(",")] if id_column else [], freq, spec.max_gap, spec.fill, positive,
        cov_flags)
    panel = Panel(ids, offsets, times, values, freq, shown, str(path), hashlib.sha256(data).hexdigest(), filled,
                  cov, tuple(cov_flags), future)
    if spec.as_of is None:
        return panel
    when = np.datetime64(pd.Timestamp(spec.as_of).to_datetime64(), times.dtype.name.split("[")[1][:-1])
    cut = panel.as_of(when, tuple(covariates.names(spec.future_covariates)))
    if cut.n_series == 0:
        raise DataError(f"{label}: no value at or before --as-of {spec.as_of} (the first is {_show(times.min())})")
    return cut
