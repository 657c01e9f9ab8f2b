"""Ingestion: read a source and validate it before anything else.

Every failure raises :class:`~flows.core.sources.DataError` naming the source, the line of the
file (line 1 is the header) and the problem; see :mod:`flows.core.sources` for where the bytes
come from and which failures are retried.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import math
from dataclasses import dataclass

import numpy as np

from . import sources
from .config import DataSpec
from .sources import DataError, expand_env, looks_like_html, redact


@dataclass(frozen=True)
class Series:
    """A validated daily series: strictly increasing dates and finite values."""

    dates: np.ndarray   # (N,) datetime64[D]
    values: np.ndarray  # (N,) float64
    source: str         # what was read: a registered name, a path or a URL
    path: str           # the local file that was parsed
    sha256: str         # checksum of that file's bytes

    def __len__(self) -> int:
        return len(self.values)

    def tail(self, n: int | None) -> "Series":
        """The last ``n`` values (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return Series(self.dates[-n:], self.values[-n:], self.source, self.path, self.sha256)


def _parse_date(text: str) -> dt.date:
    text = text.strip()
    try:
        return dt.date.fromisoformat(text[:10]) if len(text) > 10 and text[10] in "T " else dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"date {text!r} is not an ISO date (YYYY-MM-DD)") from None


def parse_csv(data: bytes, label: str, date_column: str = "ds", value_column: str = "y",
              max_gap_days: int | None = None, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate CSV bytes; returns (dates datetime64[D], values float64).

    ``label`` names the source in error messages. Lines are numbered as in the file, the header
    being line 1. ``positive`` rejects values ≤ 0 (log returns need positive prices).
    """
    if not data.strip():
        raise DataError(f"{label}: the file is empty")
    if looks_like_html(data):
        raise DataError(f"{label}: the file is an HTML page, not CSV")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{label} line {line}: bytes that are not UTF-8 at byte offset {e.start}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{label}: the file is empty") from None
    header = [h.strip() for h in header]
    missing = [c for c in (date_column, value_column) if c not in header]
    if missing:
        hint = ""
        if len(header) == 1 and any(d in header[0] for d in ";\t|"):
            hint = " (the header is one field: is the file delimited by something other than ','?)"
        raise DataError(f"{label} line 1: missing column(s) {', '.join(map(repr, missing))}; "
                        f"the header has {header}{hint}")
    di, vi = header.index(date_column), header.index(value_column)
    dates: list[dt.date] = []
    values: list[float] = []
    lines: list[int] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue  # blank line
        if len(row) != len(header):
            raise DataError(f"{label} line {line}: expected {len(header)} fields, got {len(row)} "
                            f"({','.join(row)!r}; truncated or malformed line)")
        try:
            d = _parse_date(row[di])
        except ValueError as e:
            raise DataError(f"{label} line {line}: {e}") from None
        raw = row[vi].strip()
        if not raw:
            raise DataError(f"{label} line {line}: missing value in column {value_column!r}")
        try:
            v = float(raw)
        except ValueError:
            raise DataError(f"{label} line {line}: value {raw!r} in column {value_column!r} is not a number") from None
        if not math.isfinite(v):
            raise DataError(f"{label} line {line}: value {raw!r} in column {value_column!r} is not finite")
        if positive and v <= 0:
            raise DataError(f"{label} line {line}: value {raw!r} in column {value_column!r} is not positive; "
                            "the 'return' target takes logarithms (use --target delta or level)")
        if dates:
            if d == dates[-1]:
                raise DataError(f"{label} line {line}: duplicate date {d} (also on line {lines[-1]})")
            if d < dates[-1]:
                raise DataError(f"{label} line {line}: date {d} comes before {dates[-1]} on line {lines[-1]}; "
                                f"dates must be sorted in increasing order")
            gap = (d - dates[-1]).days
            if max_gap_days is not None and gap > max_gap_days:
                raise DataError(f"{label} line {line}: gap of {gap} days after {dates[-1]} (line {lines[-1]}) "
                                f"exceeds {max_gap_days} days; is the series daily and complete?")
        dates.append(d)
        values.append(v)
        lines.append(line)
    if not values:
        raise DataError(f"{label}: the file has a header but no data rows")
    return np.array(dates, dtype="datetime64[D]"), np.array(values, dtype=np.float64)


def load_series(spec: DataSpec, positive: bool = False) -> Series:
    """Fetch (or reuse the cache for) ``spec.source`` and return the validated series.

    ``positive`` rejects values ≤ 0 (the ``return`` target takes logarithms). ``${NAME}`` in a URL is
    replaced with the environment variable NAME (a token stays out of the run's parameters); the
    series, messages and logs carry the URL with secrets redacted. A registered source's entry may
    name its columns; explicit columns in ``spec`` other than the defaults win.
    """
    entry = sources.registered_sources().get(spec.source, {})
    date_column = spec.date_column if spec.date_column != "ds" else entry.get("date_column", "ds")
    value_column = spec.value_column if spec.value_column != "y" else entry.get("value_column", "y")
    path, _ = sources.resolve_source(expand_env(spec.source))
    data = path.read_bytes()
    shown = redact(spec.source)
    dates, values = parse_csv(data, str(path) if spec.source == str(path) else f"{shown} ({path})",
                              date_column, value_column, spec.max_gap_days, positive)
    return Series(dates, values, shown, str(path), hashlib.sha256(data).hexdigest())
