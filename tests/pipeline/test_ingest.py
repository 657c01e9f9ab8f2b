"""Ingestion: validation errors name the source, line and problem; the cache; downloads over real HTTP."""
import hashlib
import time

import numpy as np
import pytest

from flows.core import ingest, sources
from flows.core.config import DataSpec
from flows.core.sources import DataError, SourceUnavailable


def load_series(source, **spec):
    """``ingest.load_series`` of a :class:`DataSpec` (no gap limit unless given)."""
    return ingest.load_series(DataSpec(source=source, **spec))

GOOD = b"ds,y\n2020-01-01,1.0\n2020-01-02,2.5\n2020-01-03,3.0\n"

# (name, file bytes, regex the error must match) — each names the line and the problem
MALFORMED = [
    ("empty file", b"", r"the file is empty"),
    ("whitespace only", b"\n\n  \n", r"the file is empty"),
    ("header only", b"ds,y\n", r"header but no data rows"),
    ("missing value column", b"ds,close\n2020-01-01,1\n", r"line 1: missing column\(s\) 'y'"),
    ("missing date column", b"date,y\n2020-01-01,1\n", r"line 1: missing column\(s\) 'ds'"),
    ("wrong delimiter", b"ds;y\n2020-01-01;1\n", r"line 1: missing column.*delimited by something other than ','"),
    ("non-numeric value", b"ds,y\n2020-01-01,1\n2020-01-02,abc\n", r"line 3: value 'abc' in column 'y' is not a number"),
    ("empty value", b"ds,y\n2020-01-01,1\n2020-01-02,\n", r"line 3: missing value in column 'y'"),
    ("NaN", b"ds,y\n2020-01-01,1\n2020-01-02,NaN\n", r"line 3: value 'NaN' in column 'y' is not finite"),
    ("+inf", b"ds,y\n2020-01-01,1\n2020-01-02,inf\n", r"line 3: value 'inf' .* is not finite"),
    ("-inf", b"ds,y\n2020-01-01,1\n2020-01-02,-Infinity\n", r"line 3: value '-Infinity' .* is not finite"),
    ("bad date", b"ds,y\n2020-01-01,1\n01/02/2020,2\n", r"line 3: date '01/02/2020' is not an ISO date"),
    ("duplicate date", b"ds,y\n2020-01-01,1\n2020-01-02,2\n2020-01-02,3\n", r"line 4: duplicate date 2020-01-02 \(also on line 3\)"),
    ("unsorted dates", b"ds,y\n2020-01-01,1\n2020-01-03,2\n2020-01-02,3\n", r"line 4: date 2020-01-02 comes before 2020-01-03 on line 3"),
    ("truncated last line", b"ds,y\n2020-01-01,1\n2020-01-02", r"line 3: expected 2 fields, got 1 .*truncated"),
    ("extra field", b"ds,y\n2020-01-01,1,7\n", r"line 2: expected 2 fields, got 3"),
    ("non-UTF-8 bytes", b"ds,y\n2020-01-01,1\n2020-01-02,\xff\xfe\n", r"line 3: bytes that are not UTF-8"),
    ("HTML error page", b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", r"HTML page, not CSV"),
]


@pytest.mark.parametrize("name,data,pattern", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_rejected_with_line_and_problem(name, data, pattern, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(DataError, match=pattern) as exc:
        load_series(str(path))
    assert str(path) in str(exc.value)  # the source is named


def test_a_gap_in_a_daily_series_is_rejected_unless_accepted_or_filled(tmp_path):
    """A Saturday in the data makes it a calendar-day series; 5 and 6 January are missing."""
    path = tmp_path / "gappy.csv"
    path.write_bytes(b"ds,y\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n2020-01-04,4\n2020-01-07,7\n2020-01-08,8\n")
    with pytest.raises(DataError, match=r"line 6: 2 missing days between 2020-01-04 \(line 5\) and 2020-01-07; .*"
                                        r"--fill ffill\|interpolate.*--max-gap N \(now 0\).*--freq"):
        load_series(str(path))
    assert len(load_series(str(path), max_gap=2)) == 6                  # accepted as it is
    filled = load_series(str(path), fill="interpolate")
    np.testing.assert_array_equal(filled.values, [1, 2, 3, 4, 5, 6, 7, 8])
    assert filled.filled == 2 and str(filled.times[4]) == "2020-01-05" and filled.freq == "D"
    assert load_series(str(path), fill="ffill").values.tolist() == [1, 2, 3, 4, 4, 4, 7, 8]
    with pytest.raises(DataError, match=r"line 5: 2020-01-04 is not on the B grid \(business days\).*--freq"):
        load_series(str(path), freq="B")


def test_good_file_custom_columns_bom_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_bytes(b"\xef\xbb\xbfDate,Close,Volume\r\n2020-01-01,10.5,3\r\n\r\n2020-01-02T00:00:00,11,4\r\n")
    s = load_series(str(path), date_column="Date", value_column="Close")
    np.testing.assert_array_equal(s.values, [10.5, 11.0])
    assert s.dates.dtype == np.dtype("datetime64[D]") and str(s.dates[1]) == "2020-01-02"
    assert s.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_names_the_alternatives():
    with pytest.raises(DataError, match=r"no such file, and not a registered source \(elecdemand, sp500, sp500_ohlcv, us_employment\)"):
        load_series("/nonexistent/prices.csv")


def test_registered_source_is_read_from_the_seeded_cache_without_network(seeded_cache, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("network used although the cache is seeded")

    monkeypatch.setattr(sources.urllib.request, "urlopen", no_network)
    s = load_series("sp500")
    entry = sources.registered_sources()["sp500"]
    assert s.sha256 == entry["sha256"]
    assert len(s) == 7322 and str(s.dates[0]) == "1979-04-11" and str(s.dates[-1]) == "2008-04-11"


def test_cached_file_with_wrong_checksum_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(tmp_path))
    (tmp_path / "SP500_Datos.csv").write_bytes(GOOD)
    with pytest.raises(DataError, match=r"sp500: cached file .* has sha256 .*expected 80c6aeb5"):
        load_series("sp500")


# ----------------------------------------------------------------------------------------------
# Downloads from a real HTTP server on loopback
# ----------------------------------------------------------------------------------------------
def test_url_source_is_downloaded_and_parsed(http_server, tmp_path, monkeypatch):
    base, handler = http_server
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(tmp_path))
    handler.routes["/prices.csv"] = lambda n: (200, "text/csv", GOOD)
    s = load_series(base + "/prices.csv")
    np.testing.assert_array_equal(s.values, [1.0, 2.5, 3.0])


def test_an_unreachable_source_is_an_io_error_and_leaves_the_cache_alone(http_server, tmp_path):
    """HTTP 5xx or a refused connection: one attempt, SourceUnavailable (an OSError, which the task retries)."""
    base, handler = http_server
    handler.routes["/down.csv"] = lambda n: (500, "text/plain", b"oops")
    dest = tmp_path / "down.csv"
    dest.write_bytes(GOOD)  # an earlier good copy
    with pytest.raises(SourceUnavailable, match=r"/down\.csv: download failed with HTTP 500") as exc:
        sources.download(base + "/down.csv", dest)
    assert isinstance(exc.value, OSError) and handler.hits["/down.csv"] == 1
    with pytest.raises(SourceUnavailable, match=r"127\.0\.0\.1:9/x\.csv: download failed: .*refused"):
        sources.download("http://127.0.0.1:9/x.csv", dest)
    assert dest.read_bytes() == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["down.csv"]  # no partial file left behind


@pytest.mark.fault(fault="a download whose bytes differ from the pinned SHA-256; an HTML page instead of CSV",
                   did="'checksum mismatch' / 'returned an HTML page' at once, no retry",
                   kept="the previous cached file (written to a temporary file, renamed only when verified)")
def test_checksum_mismatch_and_html_page_never_replace_the_cache(http_server, tmp_path):
    base, handler = http_server
    handler.routes["/changed.csv"] = lambda n: (200, "text/csv", GOOD + b"2020-01-04,9\n")
    handler.routes["/login"] = lambda n: (200, "text/html; charset=utf-8", b"<html>sign in</html>")
    dest = tmp_path / "data.csv"
    dest.write_bytes(GOOD)
    with pytest.raises(DataError, match="checksum mismatch"):
        sources.download(base + "/changed.csv", dest, sha256=hashlib.sha256(GOOD).hexdigest())
    with pytest.raises(DataError, match="returned an HTML page"):
        sources.download(base + "/login", dest)
    assert dest.read_bytes() == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_a_server_that_does_not_answer_times_out(http_server, tmp_path):
    base, handler = http_server

    def slow(n):
        time.sleep(1.5)
        return 200, "text/csv", GOOD

    handler.routes["/slow.csv"] = slow
    dest = tmp_path / "slow.csv"
    dest.write_bytes(b"ds,y\n2019-01-01,1\n")
    with pytest.raises(SourceUnavailable, match=r"download failed: .*timed out"):
        sources.download(base + "/slow.csv", dest, timeout=0.3)
    assert handler.hits["/slow.csv"] == 1
    assert dest.read_bytes() == b"ds,y\n2019-01-01,1\n" and [p.name for p in tmp_path.iterdir()] == ["slow.csv"]


def test_not_found_is_bad_data(http_server, tmp_path):
    base, handler = http_server
    handler.routes["/missing.csv"] = lambda n: (404, "text/plain", b"no")
    with pytest.raises(DataError, match="HTTP 404"):
        sources.download(base + "/missing.csv", tmp_path / "m.csv")
    assert handler.hits["/missing.csv"] == 1 and not (tmp_path / "m.csv").exists()


def test_registered_source_downloads_once_into_the_cache(http_server, tmp_path, monkeypatch, seeded_cache):
    """With an empty cache the pinned file is fetched, verified and kept; the next load uses no network."""
    base, handler = http_server
    data = (seeded_cache / "SP500_Datos.csv").read_bytes()
    handler.routes["/SP500_Datos.csv"] = lambda n: (200, "text/csv", data)
    entry = dict(sources.registered_sources()["sp500"], url=base + "/SP500_Datos.csv", mirrors=[])
    monkeypatch.setattr(sources, "registered_sources", lambda: {"sp500": entry})
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(tmp_path))
    assert len(load_series("sp500")) == 7322
    assert len(load_series("sp500")) == 7322
    assert handler.hits["/SP500_Datos.csv"] == 1
    assert (tmp_path / "SP500_Datos.csv").read_bytes() == data


def test_a_local_mirror_seeds_the_cache_and_a_bad_mirror_copy_is_an_error(tmp_path, monkeypatch, seeded_cache):
    data = (seeded_cache / "SP500_Datos.csv").read_bytes()
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    (mirror / "SP500_Datos.csv").write_bytes(data)
    entry = dict(sources.registered_sources()["sp500"], url="http://127.0.0.1:9/unreachable", mirrors=[str(mirror)])
    monkeypatch.setattr(sources, "registered_sources", lambda: {"sp500": entry})
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(cache))
    assert len(load_series("sp500")) == 7322
    assert (cache / "SP500_Datos.csv").read_bytes() == data
    (cache / "SP500_Datos.csv").unlink()
    (mirror / "SP500_Datos.csv").write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"mirror copy .* has sha256"):
        load_series("sp500")
    assert not (cache / "SP500_Datos.csv").exists()


@pytest.mark.parametrize("name, freq, n_series, rows, last", [
    ("us_employment", "MS", 148, 72339, "2019-09-01"),
    ("elecdemand", "30min", 1, 17520, "2014-12-31T23:30:00"),
    ("sp500_ohlcv", "B", 1, 17346, "2018-12-07"),
])
def test_the_registered_real_data_sets_load_from_the_mirror(name, freq, n_series, rows, last, tmp_path, monkeypatch):
    """Pinned by SHA-256, seeded from ../shared/data, columns and frequency from their registry entries."""
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(tmp_path))
    panel = load_series(name)
    assert (panel.freq, panel.n_series, len(panel), str(panel.last.max())) == (freq, n_series, rows, last)
    assert panel.sha256 == sources.registered_sources()[name]["sha256"]
    assert np.all(np.diff(panel.offsets) > 0) and np.all(np.isfinite(panel.values))


def test_a_registered_source_without_a_url_or_a_copy_says_where_to_put_it(tmp_path, monkeypatch):
    entry = dict(sources.registered_sources()["us_employment"], mirrors=[])
    monkeypatch.setattr(sources, "registered_sources", lambda: {"us_employment": entry})
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"us_employment: not in the cache .* and it has no download URL: put "
                                        r"us_employment\.csv \(sha256 fccbd277"):
        load_series("us_employment")


def test_long_wide_and_parquet_layouts_give_the_same_panel(tmp_path):
    import pandas as pd

    times = pd.date_range("2020-01-01", periods=6, freq="MS")
    long = pd.DataFrame({"shop": ["x"] * 6 + ["y"] * 4, "item": ["a"] * 6 + ["b"] * 4,
                         "ds": list(times) + list(times[2:]), "y": np.arange(10.0) + 1})
    long.sample(frac=1.0, random_state=0).sort_values("ds", kind="stable").to_csv(tmp_path / "long.csv", index=False)
    wide = pd.DataFrame({"ds": times, "x/a": np.arange(6.0) + 1, "y/b": [np.nan, np.nan, 7, 8, 9, 10]})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    long.to_parquet(tmp_path / "long.parquet")
    a = load_series(str(tmp_path / "long.csv"), id_column="shop,item")
    b = load_series(str(tmp_path / "wide.csv"), value_column="*")
    c = load_series(str(tmp_path / "long.parquet"), id_column="shop,item")
    for p in (a, b, c):
        assert p.freq == "MS" and list(p.ids) == ["x/a", "y/b"] and list(p.lengths) == [6, 4]
        np.testing.assert_array_equal(p.values, np.arange(10.0) + 1)
        np.testing.assert_array_equal(p.times[6:], times[2:].values.astype("datetime64[D]"))
    with pytest.raises(DataError, match=r"long\.parquet row 3: series 'x/a': duplicate date 2020-02-01"):
        pd.concat([long.iloc[:2], long.iloc[1:]]).to_parquet(tmp_path / "long.parquet")
        load_series(str(tmp_path / "long.parquet"), id_column="shop,item")
