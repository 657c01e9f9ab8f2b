"""Where a series comes from: registered sources, local files and http(s) URLs, and the download cache.

Registered sources live in ``data/sources.json`` (URL pinned to a commit, SHA-256). They are
downloaded once into the cache directory (``data/cache/``, or ``$NNFORECAST_CACHE_DIR``); a cached
file whose checksum matches is used without any network access, and a checksum mismatch is an
error. An entry may list local ``mirrors`` (directories, relative to the project root) that are
tried before the network: a mirrored copy with the right checksum seeds the cache, so machines
without internet access run offline.

Two kinds of failure, one retry policy (the Prefect task that loads the series holds it):

* :class:`SourceUnavailable` (an ``OSError``): the source could not be reached this time — a
  connection error, a time-out, an HTTP 5xx answer. Trying again later may help: the task retries.
* :class:`DataError` (a ``ValueError``): what arrived is wrong — HTTP 4xx, an HTML page instead of
  CSV, a checksum mismatch, a malformed file. Trying again cannot help: it fails at once.

A download is one attempt; its bytes go to a temporary file and replace the cached copy only
once complete and verified, so a partial download never replaces a good file.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .files import PROJECT_ROOT, atomic_write, cache_dir, sha256_file

log = logging.getLogger(__name__)

SOURCES_FILE = PROJECT_ROOT / "data" / "sources.json"


class DataError(ValueError):
    """Bad input data; the message names the source, the line and the problem. Not worth retrying."""


class SourceUnavailable(OSError):
    """A source that could not be reached this time (connection, time-out, HTTP 5xx). Worth retrying."""


def registered_sources() -> dict[str, dict]:
    with open(SOURCES_FILE, encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# Secrets in URLs
# ----------------------------------------------------------------------------------------------
_SECRET_PARAM = re.compile(r"token|key|secret|passw|pwd|sig|auth|credential", re.IGNORECASE)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def redact(source: str) -> str:
    """``source`` fit for logs, tags and reports: a URL's password and secret-looking query values as *** (any
    ``scheme://``: a data URL, a database URL)."""
    if "://" not in source:
        return source
    parts = urllib.parse.urlsplit(source)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join(f"{k}=***" if _SECRET_PARAM.search(k) else (f"{k}={v}" if v or "=" in pair else k)
                     for pair in parts.query.split("&") if pair
                     for k, _, v in [pair.partition("=")])
    if netloc == parts.netloc and query == parts.query:
        return source   # nothing secret (rebuilding would turn sqlite:////abs/path into sqlite://abs/path)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def expand_env(source: str) -> str:
    """Replace ``${NAME}`` in ``source`` with the environment variable NAME (keeps secrets out of parameters)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise DataError(f"{redact(source)}: environment variable {m.group(1)} is not set")
        return os.environ[m.group(1)]

    return _ENV_REF.sub(sub, source)


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


def looks_like_html(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml"))


def download(url: str, dest: Path, sha256: str | None = None, *, timeout: float | None = None) -> Path:
    """Download ``url`` to ``dest`` (one attempt), verifying ``sha256`` when given.

    ``timeout``: seconds without an answer before the attempt is abandoned (default
    ``$NNFORECAST_DOWNLOAD_TIMEOUT``, else 30).

    Raises :class:`SourceUnavailable` for connection errors, time-outs and HTTP 5xx, and
    :class:`DataError` for HTTP 4xx, an HTML page or a checksum mismatch; in every case ``dest``
    keeps the bytes it had. Credentials in the URL (``https://user:password@host/…``) go as HTTP
    basic auth and never into a message.
    """
    shown = redact(url)
    if timeout is None:
        timeout = float(os.environ.get("NNFORECAST_DOWNLOAD_TIMEOUT", "30"))
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as resp:
            ctype = resp.headers.get("Content-Type", "")
            data = resp.read()
    except urllib.error.HTTPError as e:
        e.close()  # the error carries the open response
        if 400 <= e.code < 500:
            raise DataError(f"{shown}: download failed with HTTP {e.code} {e.reason}") from None
        raise SourceUnavailable(f"{shown}: download failed with HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise SourceUnavailable(f"{shown}: download failed: {reason}") from None
    if "html" in ctype.lower() or looks_like_html(data):
        raise DataError(f"{shown}: the server returned an HTML page ({ctype or 'no content type'}), not CSV")
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256:
        raise DataError(f"{shown}: checksum mismatch: expected sha256 {sha256}, got {actual}; "
                        "the cache was not changed")
    return atomic_write(dest, data)


def resolve_source(source: str) -> tuple[Path, str | None]:
    """The local file for ``source`` and the checksum it must have (None if not pinned)."""
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
                    raise DataError(f"{source}: mirror copy {candidate} has sha256 {actual}, "
                                    f"expected {entry['sha256']}")
                atomic_write(path, candidate.read_bytes())
                log.info("seeded the cache with %s from %s", source, candidate)
                return path, entry["sha256"]
        if not entry.get("url"):
            mirrors = ", ".join(entry.get("mirrors", []))
            raise DataError(f"{source}: not in the cache ({path}) nor in a mirror ({mirrors}), "
                            f"and it has no download URL: put {entry['filename']} (sha256 {entry['sha256']}) in one "
                            "of them")
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
