"""Realized errors from ledger rows, by hand-computable examples."""
import numpy as np
import pandas as pd
import pytest

from flows.core.realized import naive_scales, realized, verdict


def rows(nights=3, champion=False):
    """Two series, one step a night: the model is off by 1 (series a) and 3 (b), naive by 2 and 2, seasonal naive
    by 4 on a and missing on b; the champion (from the second night) off by 2 and 2."""
    out = []
    for k in range(nights):
        origin = pd.Timestamp("2020-01-01") + pd.Timedelta(days=k)
        for uid, err in (("a", 1.0), ("b", 3.0)):
            base = dict(model_name="m", unique_id=uid, origin=origin, step=1, ds=origin + pd.Timedelta(days=1),
                        naive=12.0, snaive=14.0 if uid == "a" else np.nan, actual=10.0, run_id=f"r{k}")
            out.append({**base, "yhat": 10.0 + err, "model_version": str(k + 2), "role": "candidate"})
            if champion and k:
                out.append({**base, "yhat": 8.0, "model_version": "1", "role": "champion"})
    return pd.DataFrame(out)


def test_per_night_and_pooled_errors_and_their_scales():
    r = realized(rows(), {"a": 2.0, "b": 4.0}, window=2)
    assert r.n_nights == 3 and list(r.nights["n"]) == [2, 2, 2]
    assert r.nights["model_mae"].tolist() == [2.0, 2.0, 2.0] and r.nights["naive_mae"].tolist() == [2.0] * 3
    assert r.nights["snaive_mae"].tolist() == [4.0] * 3                      # over the rows that have one
    assert r.last["model_mase"] == pytest.approx((1 / 2 + 3 / 4) / 2)        # each error over its series' scale
    assert r.last["n"] == 4 and r.all["n"] == 6
    m = r.metrics()
    assert m["realized_mae_last"] == 2.0 and m["realized_naive_mae_all"] == 2.0 and m["realized_nights"] == 3
    assert list(r.by_version["model_version"]) == ["2", "3", "4"] and (r.by_version["nights"] == 1).all()
    assert "realized_champion_mae_last" not in m and r.verdict is None


def test_unscored_rows_are_left_out():
    data = rows()
    data.loc[data["origin"] == data["origin"].max(), "actual"] = np.nan
    assert realized(data, {"a": 1.0, "b": 1.0}, window=5).n_nights == 2
    assert realized(data.iloc[:0], {}, window=5).sentence().startswith("Realized accuracy: no published forecast")


def test_the_champion_is_compared_on_the_same_targets_once_there_are_enough_nights():
    data = rows(nights=4, champion=True)                # the champion beside the new versions from night 2
    assert verdict(data, window=4) is None              # 3 paired nights < 4
    v = verdict(data, window=3)
    assert (v.nights, v.forecasts, v.candidate_mae, v.champion_mae, v.champions) == (3, 6, 2.0, 2.0, "1")
    assert not v.better()                               # a tie keeps the champion
    better = data.assign(yhat=np.where(data["role"] == "candidate", 10.5, data["yhat"]))
    assert verdict(better, window=3).better()
    r = realized(data, {"a": 1.0, "b": 1.0}, window=3)
    assert r.champion["model_mae"] == 2.0 and r.metrics()["realized_paired_champion_mae"] == 2.0


def test_naive_scales():
    scales = naive_scales(np.array(["a", "b", "c"]), lambda s: [[1, 3, 2], [5, 5], [7]][s])
    assert scales["a"] == 1.5 and np.isnan(scales["b"]) and np.isnan(scales["c"])
