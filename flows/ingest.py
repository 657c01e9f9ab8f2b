"""Ingestion: a daily series from a registered source, a CSV path or an http(s) URL, validated.

Registered sources live in ``data/sources.json`` (URL pinned to a commit, SHA-256). They are
downloaded once into the cache directory (``data/cache/``, or ``$NNFORECAST_CACHE_DIR``); a
cached file whose checksum matches is used without any network access, and a checksum mismatch
is an error. An entry may list local ``mirrors`` (directories, relative to the project root)
that are tried before the network: a mirrored copy with the right checksum seeds the cache, so
machines without internet access run offline. Downloads are retried with backoff, verified, and moved into place atomically, so
a partial download never replaces a cached file.

Validation runs before anything else and every failure raises :class:`DataError` naming the
source, the line of the file (line 1 is the header) and the problem.
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SOURCES_FILE = PROJECT_ROOT / "data" / "sources.json"
DEFAULT_CACHE_DIR = PROJECT_ROOT / "data" / "cache"


class DataError(ValueError):
    """Bad input data; the message names the source, the line and the problem."""


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


_SECRET_PARAM = re.compile(r"token|key|secret|passw|pwd|sig|auth|credential", re.IGNORECASE)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def redact(source: str) -> str:
    """``source`` fit for logs, tags and reports: a URL's password and secret-looking query values as ***."""
    if not source.startswith(("http://", "https://")):
        return source
    parts = urllib.parse.urlsplit(source)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join(f"{k}=***" if _SECRET_PARAM.search(k) else (f"{k}={v}" if v or "=" in pair else k)
                     for pair in parts.query.split("&") if pair
                     for k, _, v in [pair.partition("=")])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def expand_env(source: str) -> str:
    """Replace ``${NAME}`` in ``source`` with the environment variable NAME (keeps secrets out of parameters)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise DataError(f"{redact(source)}: environment variable {m.group(1)} is not set")
        return os.environ[m.group(1)]

    return _ENV_REF.sub(sub, source)


def cache_dir() -> Path:
    return Path(os.environ.get("NNFORECAST_CACHE_DIR", DEFAULT_CACHE_DIR))


def registered_sources() -> dict[str, dict]:
    with open(SOURCES_FILE, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------------
def _request(url: str) -> urllib.request.Request:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    bare = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                             f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
    return urllib.request.Request(bare, headers={"Authorization": f"Basic {token}"})


def download(url: str, dest: Path, sha256: str | None = None, *, timeout: float = 30.0,
             retries: int = 3, backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` when given.

    Transient failures (connection errors, time-outs, HTTP 5xx) are retried ``retries`` times with
    exponential backoff; a 4xx answer, an HTML page or a checksum mismatch fails at once. The bytes
    go to a temporary file in ``dest``'s directory and replace ``dest`` only once complete and
    verified. Credentials in the URL (``https://user:password@host/…``) go as HTTP basic auth.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = _request(url)
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            log.warning("download of %s failed (%s); retry %d/%d in %.1f s", redact(url), last_error, attempt, retries,
                        delay)
            time.sleep(delay)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                ctype = resp.headers.get("Content-Type", "")
                data = resp.read()
        except urllib.error.HTTPError as e:
            e.close()  # the error carries the open response
            if 400 <= e.code < 500:
                raise DataError(f"{redact(url)}: download failed with HTTP {e.code} {e.reason}") from None
            last_error = e
            continue
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            last_error = e
            continue
        if "html" in ctype.lower() or _looks_like_html(data):
            raise DataError(f"{redact(url)}: the server returned an HTML page ({ctype or 'no content type'}), not CSV")
        actual = hashlib.sha256(data).hexdigest()
        if sha256 is not None and actual != sha256:
            raise DataError(f"{redact(url)}: checksum mismatch: expected sha256 {sha256}, got {actual}; the cache was not changed")
        fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest
    raise DataError(f"{redact(url)}: download failed after {retries + 1} attempts: {last_error}")


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, open(src, "rb") as g:
            f.write(g.read())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _looks_like_html(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml"))


def resolve_source(source: str, *, offline_ok: bool = True) -> tuple[Path, str | None]:
    """Return the local file for ``source`` and the checksum it must have (None if not pinned)."""
    sources = registered_sources()
    if source in sources:
        entry = sources[source]
        path = cache_dir() / entry["filename"]
        if path.exists():
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                raise DataError(
                    f"{source}: cached file {path} has sha256 {actual}, expected {entry['sha256']} "
                    f"(corrupt or changed; delete it to download again)"
                )
            return path, entry["sha256"]
        for mirror in entry.get("mirrors", []):
            candidate = (PROJECT_ROOT / mirror / entry["filename"]).resolve()
            if candidate.is_file():
                actual = sha256_file(candidate)
                if actual != entry["sha256"]:
                    raise DataError(f"{source}: mirror copy {candidate} has sha256 {actual}, expected {entry['sha256']}")
                _copy_atomic(candidate, path)
                log.info("seeded the cache with %s from %s", source, candidate)
                return path, entry["sha256"]
        log.info("downloading %s from %s", source, entry["url"])
        return download(entry["url"], path, entry["sha256"]), entry["sha256"]
    if source.startswith(("http://", "https://")):
        name = "url-" + hashlib.sha256(source.encode()).hexdigest()[:16] + ".csv"
        return download(source, cache_dir() / name), None
    if source.startswith("file://"):
        source = source[len("file://"):]
    path = Path(source)
    if not path.is_file():
        valid = ", ".join(sorted(sources))
        raise DataError(f"{source}: no such file, and not a registered source ({valid}) or an http(s) URL")
    return path, None


# ----------------------------------------------------------------------------------------------
# Parsing and validation
# ----------------------------------------------------------------------------------------------
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
    if _looks_like_html(data):
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


def load_series(source: str = "sp500", date_column: str | None = None, value_column: str | None = None,
                max_gap_days: int | None = None, positive: bool = False) -> Series:
    """Fetch (or reuse the cache for) ``source`` and return the validated series.

    For a registered source, unspecified column names come from its entry in ``data/sources.json``.
    ``${NAME}`` in a URL is replaced with the environment variable NAME (a token stays out of the
    run's parameters); the series, messages and logs carry the URL with secrets redacted.
    """
    entry = registered_sources().get(source, {})
    date_column = date_column or entry.get("date_column", "ds")
    value_column = value_column or entry.get("value_column", "y")
    path, _ = resolve_source(expand_env(source))
    data = path.read_bytes()
    shown = redact(source)
    dates, values = parse_csv(data, str(path) if source == str(path) else f"{shown} ({path})",
                              date_column, value_column, max_gap_days, positive)
    return Series(dates, values, shown, str(path), hashlib.sha256(data).hexdigest())
