"""Frequencies: inferred from the timestamps, checked against the grid, seasons, and the forecast dates they give."""
import numpy as np
import pandas as pd
import pytest

from flows.core.calendar import (FrequencyError, check_grid, infer_freq, next_dates, parse_freq, season_length)

#: (how pandas makes the series, the frequency inferred, its season, the two timestamps after the last)
FREQUENCIES = [
    (pd.bdate_range("2024-01-01", "2024-03-01"), "B", 5, ["2024-03-04", "2024-03-05"]),
    (pd.date_range("2024-01-01", "2024-03-03", freq="D"), "D", 7, ["2024-03-04", "2024-03-05"]),
    (pd.date_range("2024-01-07", periods=40, freq="W-SUN"), "W-SUN", 52, ["2024-10-13", "2024-10-20"]),
    (pd.date_range("2024-01-05", periods=40, freq="W-FRI"), "W-FRI", 52, ["2024-10-11", "2024-10-18"]),
    (pd.date_range("2018-01-01", periods=30, freq="MS"), "MS", 12, ["2020-07-01", "2020-08-01"]),
    (pd.date_range("2018-01-31", periods=30, freq="ME"), "ME", 12, ["2020-07-31", "2020-08-31"]),
    (pd.date_range("2005-01-01", periods=19, freq="QS-JAN"), "QS-JAN", 4, ["2009-10-01", "2010-01-01"]),
    (pd.date_range("2005-03-31", periods=19, freq="QE-DEC"), "QE-MAR", 4, ["2009-12-31", "2010-03-31"]),
    (pd.date_range("1990-01-01", periods=19, freq="YS"), "YS-JAN", 1, ["2009-01-01", "2010-01-01"]),
    (pd.date_range("1990-12-31", periods=18, freq="YE"), "YE-DEC", 1, ["2008-12-31", "2009-12-31"]),
    (pd.date_range("2024-01-01", periods=100, freq="h"), "h", 24, ["2024-01-05T04:00:00", "2024-01-05T05:00:00"]),
    (pd.date_range("2024-01-01", periods=100, freq="30min"), "30min", 48,
     ["2024-01-03T02:00:00", "2024-01-03T02:30:00"]),
    (pd.date_range("2024-01-01", periods=100, freq="15min"), "15min", 96,
     ["2024-01-02T01:00:00", "2024-01-02T01:15:00"]),
    (pd.date_range("2024-01-01", periods=100, freq="5min"), "5min", 288,
     ["2024-01-01T08:20:00", "2024-01-01T08:25:00"]),
]


@pytest.mark.parametrize("index, alias, season, after", FREQUENCIES, ids=[f[1] for f in FREQUENCIES])
def test_each_frequency_is_inferred_checked_and_continued(index, alias, season, after):
    times = index.values.astype("datetime64[s]")
    same = np.ones(len(times) - 1, dtype=bool)
    assert infer_freq(times, same) == alias
    grid = parse_freq(alias)
    off_grid, missing = check_grid(times, same, grid)
    assert not off_grid.any() and not missing.any()
    assert season_length(grid) == season
    last = times[-1] if "min" in alias or alias == "h" else times[-1].astype("datetime64[D]")
    assert [str(t) for t in next_dates(last, 2, alias)] == after
    # one period taken out is one missing period, found where it was
    gone = np.delete(times, 5)
    _, missing = check_grid(gone, same[1:], grid)
    assert missing.tolist() == [0] * 4 + [1] + [0] * (len(gone) - 6)


def test_the_dates_after_a_series_follow_its_calendar_not_business_days():
    sunday = np.datetime64("2024-06-02")  # a daily series ending on a Sunday continues on Monday, not Tuesday
    assert [str(d) for d in next_dates(sunday, 3, "D")] == ["2024-06-03", "2024-06-04", "2024-06-05"]
    assert [str(d) for d in next_dates(np.datetime64("2024-05-31"), 2, "B")] == ["2024-06-03", "2024-06-04"]
    assert [str(d) for d in next_dates(np.datetime64("2009-09-30"), 2, "QE-DEC")] == ["2009-12-31", "2010-03-31"]
    assert [str(d) for d in next_dates(np.datetime64("2008-01-01"), 1, "YS-JAN")] == ["2009-01-01"]
    assert next_dates(np.int64(99), 2).tolist() == [100, 101]  # a series labelled by positions


def test_a_weekend_is_not_a_gap_of_a_business_day_series_but_a_holiday_is():
    times = np.array(["2024-03-28", "2024-04-01", "2024-04-02"], dtype="datetime64[s]")  # Thu, (Good Friday), Mon
    off_grid, missing = check_grid(times, np.ones(2, bool), parse_freq("B"))
    assert not off_grid.any() and missing.tolist() == [1, 0]
    saturday = np.array(["2024-03-29", "2024-03-30"], dtype="datetime64[s]")
    assert check_grid(saturday, np.ones(1, bool), parse_freq("B"))[0].tolist() == [False, True]


def test_off_grid_timestamps_and_steps_are_found():
    month = parse_freq("MS")
    times = np.array(["2024-01-01", "2024-02-15", "2024-03-01"], dtype="datetime64[s]")
    assert check_grid(times, np.ones(2, bool), month)[0].tolist() == [False, True, False]
    half_hours = np.array(["2024-01-01T00:00", "2024-01-01T00:30", "2024-01-01T00:45"], dtype="datetime64[s]")
    assert check_grid(half_hours, np.ones(2, bool), parse_freq("30min"))[0].tolist() == [False, False, True]
    # steps across two series are not compared
    two = np.array(["2024-01-01", "2024-02-01", "2020-01-01", "2020-02-01"], dtype="datetime64[s]")
    assert check_grid(two, np.array([True, False, True]), month)[1].tolist() == [0, 0, 0]


def test_unknown_or_unsupported_frequencies_are_named():
    with pytest.raises(FrequencyError, match="--freq 'fortnightly' is not a pandas frequency"):
        parse_freq("fortnightly")
    with pytest.raises(FrequencyError, match="not supported"):
        parse_freq("SME")
    with pytest.raises(FrequencyError, match="single timestamp per series; give --freq"):
        infer_freq(np.array(["2024-01-01"], dtype="datetime64[s]"), np.zeros(0, bool))
