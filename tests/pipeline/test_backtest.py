"""Backtesting: walk-forward folds without look-ahead, Diebold–Mariano, lag copy, split conformal."""
import math
import re
from dataclasses import replace

import numpy as np
import pytest

from scipy import stats

from flows.core import backtest as bt
from flows.core.backtest import (Fold, conformal_quantile, diebold_mariano, interval_coverage, lag_copy, summarize,
                                 walk_forward)
from flows.core.config import WindowSpec
from flows.core.evaluation import evaluate
from flows.core.transforms import PanelTransform, fit_transform
from flows.core.windowing import WindowingError


def fold_windows(values, fold, window, horizon, test_size, val_fraction=0.2, target="level", dtype=np.float32):
    spec = WindowSpec(window=window, horizon=horizon, test_size=test_size, val_fraction=val_fraction, target=target)
    return bt.fold_windows(values, fold, spec, dtype)


def random_walk(n, seed=0):
    return 100 + np.cumsum(np.random.default_rng(seed).normal(size=n))


# ---------------------------------------------------------------------------------------- folds

def test_expanding_folds_have_consecutive_test_blocks_ending_at_n():
    folds = walk_forward(n=100, k=4, test_size=10, window=5)
    assert folds == [Fold(0, 0, 70), Fold(1, 0, 80), Fold(2, 0, 90), Fold(3, 0, 100)]
    for before, after in zip(folds, folds[1:]):
        assert after.test_start(10) == before.end


@pytest.mark.parametrize("horizon", [1, 3])
def test_rolling_folds_have_the_same_number_of_windows(horizon):
    values = random_walk(200)
    folds = walk_forward(len(values), k=5, test_size=12, window=8, horizon=horizon, mode="rolling", train_span=60)
    assert folds[-1].end == len(values)
    assert {f.test_start(12, horizon) - f.start for f in folds} == {60}
    sizes = set()
    for fold in folds:
        w = fold_windows(values, fold, 8, horizon, 12, val_fraction=0.25)
        sizes.add((len(w.train), len(w.val), len(w.test)))
    assert len(sizes) == 1
    n_train, n_val, n_test = sizes.pop()
    assert n_train + n_val + (horizon - 1) == 60 - 8 and n_test == 12   # train_span − window, before the purge


@pytest.mark.parametrize("mode, extra", [("expanding", {}), ("rolling", {"train_span": 30})])
@pytest.mark.parametrize("horizon", [1, 4])
def test_the_needed_length_in_the_error_is_exact(mode, extra, horizon):
    with pytest.raises(ValueError, match=r"fold 0 .* need n >= (\d+)") as info:
        walk_forward(n=10, k=3, test_size=7, window=6, horizon=horizon, mode=mode, **extra)
    need = int(re.search(r"need n >= (\d+)", str(info.value)).group(1))
    folds = walk_forward(n=need, k=3, test_size=7, window=6, horizon=horizon, mode=mode, **extra)
    assert folds[0].start == 0
    with pytest.raises(ValueError, match="fold 0"):
        walk_forward(n=need - 1, k=3, test_size=7, window=6, horizon=horizon, mode=mode, **extra)


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k must be an integer >= 1"),
    ({"test_size": 0}, "test_size must be"),
    ({"window": 2.5}, "window must be an integer"),
    ({"test_size": 40}, r"fold 0 of 3 .* need n >= 127, got n=100"),
    ({"mode": "sliding"}, "unknown mode 'sliding'; valid: expanding, rolling"),
    ({"mode": "rolling"}, "needs train_span"),
    ({"train_span": 50}, "only with mode='rolling'"),
    ({"mode": "rolling", "train_span": 6}, "train_span=6 gives 1 training"),
    ({"mode": "rolling", "train_span": 80}, r"fold 0 of 3 would start at -10"),
])
def test_walk_forward_rejects_bad_input(kwargs, message):
    args = {"n": 100, "k": 3, "test_size": 10, "window": 5} | kwargs
    with pytest.raises(ValueError, match=message):
        walk_forward(**args)


def check_no_look_ahead(values, fold, w, test_size, horizon, target):
    """Fail if a training or validation target, or the scaler, touches the fold's test block."""
    test_first = fold.test_start(test_size, horizon)
    for name, split in (("train", w.train), ("val", w.val)):
        last_target = int(split.index.max()) + horizon - 1
        assert last_target < test_first, f"fold {fold.index}: a {name} target at {last_target} is in the test block"
    assert w.test.index[0] == test_first and w.test.index[-1] + horizon == fold.end, "test block moved"
    assert int(w.train.index.min()) - w.window >= fold.start, "inputs reach before the fold"
    assert w.train_end <= test_first
    assert w.scaler == fit_transform(target, values[fold.start:w.train_end]), "scaler not fitted on the training part"
    for split in (w.train, w.val, w.test):   # positions really are positions in the full series
        steps = split.index[:, None] + np.arange(horizon)
        np.testing.assert_array_equal(split.actual, values[steps])
        np.testing.assert_array_equal(split.last, values[split.index - 1])


@pytest.mark.parametrize("target", ["level", "delta"])
@pytest.mark.parametrize("horizon", [1, 3])
@pytest.mark.parametrize("mode, span", [("expanding", None), ("rolling", 70)])
def test_no_fold_sees_its_test_block(target, horizon, mode, span):
    values = random_walk(240, seed=1)
    folds = walk_forward(len(values), k=4, test_size=20, window=10, horizon=horizon, mode=mode, train_span=span)
    for fold in folds:
        w = fold_windows(values, fold, 10, horizon, 20, val_fraction=0.2, target=target)
        check_no_look_ahead(values, fold, w, 20, horizon, target)
        # changing everything from the test block on leaves what the model is fitted on unchanged
        spiked = values.copy()
        spiked[fold.test_start(20, horizon):] *= 3
        w2 = fold_windows(spiked, fold, 10, horizon, 20, val_fraction=0.2, target=target)
        assert w2.scaler == w.scaler
        for a, b in ((w.train, w2.train), (w.val, w2.val)):
            np.testing.assert_array_equal(a.X, b.X)
            np.testing.assert_array_equal(a.y, b.y)


def test_the_look_ahead_check_can_fail():
    values = random_walk(240, seed=1)
    test_size, horizon = 20, 3
    fold = walk_forward(len(values), k=4, test_size=test_size, window=10, horizon=horizon)[1]
    good = fold_windows(values, fold, 10, horizon, test_size)
    check_no_look_ahead(values, fold, good, test_size, horizon, "level")

    # 1. no purge for h > 1: validation windows right up to the test part, whose targets run into it
    unpurged = replace(good, val=replace(good.val, index=good.val.index + horizon - 1))
    with pytest.raises(AssertionError, match="val target"):
        check_no_look_ahead(values, fold, unpurged, test_size, horizon, "level")
    # 2. a fold whose data ends one test block late: training and validation cover this fold's test block
    late = fold_windows(values, Fold(fold.index, fold.start, fold.end + test_size), 10, horizon, test_size)
    with pytest.raises(AssertionError, match="val target"):
        check_no_look_ahead(values, fold, late, test_size, horizon, "level")
    # 3. the notebooks' leak: a scaler fitted on the whole fold, test block included
    values_with_new_max = values.copy()
    values_with_new_max[fold.end - 1] = values.max() + 10
    leaky = replace(good, scalers=PanelTransform.fit("level", [values_with_new_max[fold.start:fold.end]]))
    with pytest.raises(AssertionError, match="scaler"):
        check_no_look_ahead(values, fold, leaky, test_size, horizon, "level")


def test_evaluate_runs_on_fold_windows():
    """Positions in the full series keep evaluate's baselines right: a zero delta forecast is the naive one."""

    class ZeroDelta:
        stateful = False

        def forward(self, X, state=None):
            return np.zeros((len(X), 2)), ()

    values = random_walk(200, seed=2)
    fold = walk_forward(len(values), k=3, test_size=15, window=8, horizon=2, mode="rolling", train_span=60)[1]
    w = fold_windows(values, fold, 8, 2, 15, target="delta", dtype=np.float64)
    result = evaluate(ZeroDelta(), w)
    np.testing.assert_allclose(result.predictions["model"], result.predictions["naive"])
    assert result.model.mase == pytest.approx(1.0)
    t = w.test.index - 1
    drift = values[t] + (values[t] - values[0]) / t
    np.testing.assert_allclose(result.predictions["drift"][:, 0], drift)


def test_fold_windows_rejects_bad_folds():
    values = random_walk(100)
    with pytest.raises(ValueError, match=r"fold 2 \[0, 120\) is outside the series of 100 values"):
        fold_windows(values, Fold(2, 0, 120), 5, 1, 10)
    with pytest.raises(WindowingError, match=r"fold 0 \[0, 30\): series too short"):
        fold_windows(values, Fold(0, 0, 30), 10, 1, 19)
    with pytest.raises(WindowingError, match=r"fold 1 \[0, 40\): series too short.*\(\+ 4 left out before the test part\)"):
        fold_windows(values, Fold(1, 0, 40), 5, 5, 10, val_fraction=0.02)


# ------------------------------------------------------------------------------------- DM

def t5_two_sided(x):
    """2·P(T_5 > |x|) in closed form: 1 − (2/π)(θ + sin θ cos θ + ⅔ sin θ cos³ θ), θ = atan(|x|/√5)."""
    theta = math.atan(abs(x) / math.sqrt(5))
    s, c = math.sin(theta), math.cos(theta)
    return 1 - 2 / math.pi * (theta + s * c + 2 / 3 * s * c ** 3)


def test_dm_worked_example_h1():
    """By hand, n = 6, power 2:

    e_model = [1, 0, 1, 0, 0, 1], e_bench = [2, 1, −2, 1, −1, 2]
    d = e_model² − e_bench² = [−3, −1, −3, −1, −1, −3], d̄ = −2, d − d̄ = [−1, 1, −1, 1, 1, −1]
    γ_0 = 6/6 = 1, V = γ_0/n = 1/6, DM = −2/√(1/6) = −2√6
    HLN factor √((n + 1 − 2h + h(h − 1)/n)/n) = √(5/6), statistic = −2√6·√(5/6) = −2√5 ≈ −4.4721
    p (two-sided, t_5) = 1 − (2/π)(atan 2 + 2/5 + 4/75) ≈ 0.006566 (θ = atan 2, cos θ = 1/√5, sin θ = 2/√5)
    """
    e_model, e_bench = [1, 0, 1, 0, 0, 1], [2, 1, -2, 1, -1, 2]
    result = diebold_mariano(e_model, e_bench)
    assert result["statistic"] == pytest.approx(-2 * math.sqrt(5), rel=1e-12)
    p = 1 - 2 / math.pi * (math.atan(2) + 34 / 75)
    assert result["p_value"] == pytest.approx(p, rel=1e-10)
    assert p == pytest.approx(t5_two_sided(-2 * math.sqrt(5)), rel=1e-12)
    assert (result["mean_loss_diff"], result["n"], result["h"]) == (-2.0, 6, 1)
    assert diebold_mariano(e_model, e_bench, alternative="less")["p_value"] == pytest.approx(p / 2, rel=1e-10)
    assert diebold_mariano(e_model, e_bench, alternative="greater")["p_value"] == pytest.approx(1 - p / 2, rel=1e-10)
    # power 1: d = [−1, −1, −1, −1, −1, −1] is constant → undefined
    assert math.isnan(diebold_mariano(e_model, e_bench, power=1)["statistic"])


def test_dm_h2_uses_the_lag1_autocovariance():
    """By hand, n = 6, h = 2:

    e_model = [1, 1, 1, 0, 0, 0], e_bench = [2, −2, 2, 1, −1, 1]
    d = [−3, −3, −3, −1, −1, −1], d̄ = −2, d − d̄ = [−1, −1, −1, 1, 1, 1]
    γ_0 = 1, γ_1 = (1 + 1 − 1 + 1 + 1)/6 = 1/2, V = (γ_0 + 2γ_1)/n = 1/3, DM = −2√3
    HLN factor √((7 − 4 + 2/6)/6) = √5/3, statistic = −2√15/3 ≈ −2.5820 (h = 1 would give −2√5)
    """
    e_model, e_bench = [1, 1, 1, 0, 0, 0], [2, -2, 2, 1, -1, 1]
    h2 = diebold_mariano(e_model, e_bench, h=2)
    assert h2["statistic"] == pytest.approx(-2 * math.sqrt(15) / 3, rel=1e-12)
    assert h2["p_value"] == pytest.approx(t5_two_sided(h2["statistic"]), rel=1e-10)
    without_gamma1 = -2 / math.sqrt(1 / 6) * math.sqrt(5) / 3
    assert abs(h2["statistic"] - without_gamma1) > 1
    assert diebold_mariano(e_model, e_bench, h=1)["statistic"] == pytest.approx(-2 * math.sqrt(5), rel=1e-12)


def dm_with_loops(e1, e2, h, power, alternative):
    """The same test written out with loops (independent of the vectorised implementation)."""
    n = len(e1)
    d = [abs(a) ** power - abs(b) ** power for a, b in zip(e1, e2)]
    mean = sum(d) / n
    var = 0.0
    for lag in range(h):
        gamma = sum((d[t] - mean) * (d[t - lag] - mean) for t in range(lag, n)) / n
        var += gamma if lag == 0 else 2 * gamma
    stat = mean / math.sqrt(var / n) * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    lower = stats.t.cdf(stat, n - 1)
    return stat, {"two-sided": 2 * min(lower, 1 - lower), "less": lower, "greater": 1 - lower}[alternative]


@pytest.mark.parametrize("h", [1, 2, 4])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_dm_matches_a_loop_implementation(h, power, alternative):
    rng = np.random.default_rng(h * 10 + power)
    noise = rng.normal(size=61)
    e_model = noise[1:] + 0.6 * noise[:-1]          # MA(1) errors, as an h = 2 forecast has
    e_bench = 1.1 * e_model + rng.normal(scale=0.5, size=60)
    stat, p = dm_with_loops(e_model, e_bench, h, power, alternative)
    result = diebold_mariano(e_model, e_bench, h=h, power=power, alternative=alternative)
    assert result["statistic"] == pytest.approx(stat, rel=1e-10)
    assert result["p_value"] == pytest.approx(p, rel=1e-8)


def test_dm_identical_errors_are_undefined():
    e = np.random.default_rng(3).normal(size=50)
    result = diebold_mariano(e, e.copy())
    assert math.isnan(result["statistic"]) and math.isnan(result["p_value"])
    assert result["mean_loss_diff"] == 0.0


def test_dm_model_better_everywhere_is_significant():
    e_bench = np.random.default_rng(4).normal(size=100)
    e_model = 0.5 * e_bench                         # |e_model| < |e_bench| at every point
    less = diebold_mariano(e_model, e_bench, alternative="less")
    assert less["statistic"] < 0 and less["p_value"] < 1e-6
    assert diebold_mariano(e_model, e_bench, alternative="greater")["p_value"] > 1 - 1e-6


def test_dm_swapping_model_and_bench_flips_the_sign():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=80), rng.normal(scale=1.2, size=80)
    ab, ba = diebold_mariano(a, b, h=3), diebold_mariano(b, a, h=3)
    assert ab["statistic"] == pytest.approx(-ba["statistic"], rel=1e-12)
    assert ab["p_value"] == pytest.approx(ba["p_value"], rel=1e-12)
    assert diebold_mariano(a, b, alternative="less")["p_value"] == pytest.approx(
        diebold_mariano(b, a, alternative="greater")["p_value"], rel=1e-12)


@pytest.mark.parametrize("args, kwargs, message", [
    (([1.0, 2.0, 3.0], [1.0, 2.0]), {}, "different lengths: e_model=3, e_bench=2"),
    (([1.0], [2.0]), {}, "at least 2 paired errors, got 1"),
    (([1.0, 2.0, 3.0], [2.0, 1.0, 1.0]), {"h": 0}, "h must be an integer >= 1"),
    (([1.0, 2.0, 3.0], [2.0, 1.0, 1.0]), {"h": 3}, "h must be smaller than the number of errors n=3"),
    (([1.0, 2.0, 3.0], [2.0, 1.0, 1.0]), {"alternative": "lower"}, "valid: two-sided, less, greater"),
    (([1.0, np.nan, 3.0], [2.0, 1.0, 1.0]), {}, "e_model has a non-finite value nan at position 1"),
])
def test_dm_rejects_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        diebold_mariano(*args, **kwargs)


# ------------------------------------------------------------------------------------- lag copy

def test_naive_forecast_copies_the_last_value():
    series = random_walk(301, seed=6)
    actual, pred = series[1:], series[:-1]          # pred[t] = actual[t − 1]
    result = lag_copy(pred, actual)
    assert result["lags"] == list(range(-5, 6))
    assert result["peak_lag"] == 1 and result["r1"] == pytest.approx(1.0, abs=1e-12)
    assert abs(result["r0"]) < 0.2
    assert result["copies_last_value"] is True


def test_perfect_and_noise_forecasts_do_not_copy():
    rng = np.random.default_rng(8)                  # not random_walk's seed: the noise must be independent
    actual = random_walk(300, seed=7)
    perfect = lag_copy(actual.copy(), actual, max_lag=3)
    assert perfect["peak_lag"] == 0 and perfect["r0"] == pytest.approx(1.0)
    assert perfect["copies_last_value"] is False
    noise = lag_copy(100 + rng.normal(size=300), actual)
    assert max(abs(r) for r in noise["xcorr"]) < 0.2
    assert noise["copies_last_value"] is False


def test_lag_copy_rejects_bad_input():
    with pytest.raises(ValueError, match="different lengths: pred=5, actual=4"):
        lag_copy(np.arange(5.0), np.arange(4.0))
    with pytest.raises(ValueError, match="needs at least max_lag \\+ 4 = 9 values"):
        lag_copy(np.arange(8.0) ** 2, np.arange(8.0) ** 2)
    with pytest.raises(ValueError, match="pred has constant first differences"):
        lag_copy(np.arange(20.0), random_walk(20))
    with pytest.raises(ValueError, match="max_lag must be an integer >= 1"):
        lag_copy(random_walk(20), random_walk(20, 1), max_lag=0)


# ----------------------------------------------------------------------------- split conformal

def test_conformal_quantile_by_hand():
    residuals = [-5.0, 1.0, -2.0, 4.0, 3.0]           # |r| sorted: 1 2 3 4 5, n = 5
    assert conformal_quantile(residuals, 0.5) == 3.0   # ⌈6·0.5⌉ = 3
    assert conformal_quantile(residuals, 0.8) == 5.0   # ⌈6·0.8⌉ = 5
    assert conformal_quantile(residuals, 0.9) == math.inf  # ⌈6·0.9⌉ = 6 > n
    # (n + 1)·level = 10·0.7 is 7.000000000000001 in floating point; the rank is still 7
    assert conformal_quantile(np.arange(1.0, 10.0), 0.7) == 7.0
    assert interval_coverage([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 5.0, 3.0], 1.0) == {"coverage": 0.75, "width": 2.0}


def simulate_coverage(quantile, draw, n_cal, level, reps=2000, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    coverages = []
    for _ in range(reps):
        q = quantile(draw(rng, n_cal), level)
        fresh = draw(rng, n_test)
        coverages.append(interval_coverage(fresh, np.zeros(n_test), q)["coverage"])
    return float(np.mean(coverages))


DRAWS = {
    "gaussian": lambda rng, n: rng.normal(scale=2.0, size=n),
    "laplace": lambda rng, n: rng.laplace(scale=1.0, size=n),
}


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_split_conformal_covers_at_the_level(name):
    """Coverage of a fresh point is exactly ⌈(n + 1)·level⌉/(n + 1) = 181/201 for continuous residuals.

    The mean over 2000 calibrations of 100 test points has a standard error ≈ 0.0008.
    """
    level, n_cal = 0.9, 200
    mean = simulate_coverage(conformal_quantile, DRAWS[name], n_cal, level)
    assert mean == pytest.approx(181 / 201, abs=0.003)
    assert level - 0.002 <= mean <= level + 1 / (n_cal + 1)


def test_the_plain_empirical_quantile_under_covers():
    """np.quantile at the level on n = 9 covers ≈ 0.82, not 0.9: the coverage test detects it."""
    level, n_cal = 0.9, 9
    plain = simulate_coverage(lambda r, lv: float(np.quantile(np.abs(r), lv)), DRAWS["gaussian"], n_cal, level)
    assert plain < level - 0.05
    conformal = simulate_coverage(conformal_quantile, DRAWS["gaussian"], n_cal, level)
    assert conformal == pytest.approx(0.9, abs=0.008)     # ⌈10·0.9⌉/10; standard error ≈ 0.002


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5])
def test_conformal_quantile_rejects_levels_outside_0_1(level):
    with pytest.raises(ValueError, match=f"level must be in \\(0, 1\\), got {level}"):
        conformal_quantile([1.0, 2.0], level)


def test_interval_coverage_rejects_bad_input():
    with pytest.raises(ValueError, match="different lengths: actual=2, pred=3"):
        interval_coverage([1.0, 2.0], [1.0, 2.0, 3.0], 1.0)
    with pytest.raises(ValueError, match="q must be >= 0, got -1"):
        interval_coverage([1.0], [1.0], -1.0)
    with pytest.raises(ValueError, match="residuals is empty"):
        conformal_quantile([], 0.9)


# ------------------------------------------------------------------------------------ summaries

def test_summarize():
    assert summarize([1.0, 2.0, 4.0]) == {"mean": pytest.approx(7 / 3), "std": pytest.approx(math.sqrt(7 / 3)),
                                          "min": 1.0, "max": 4.0, "n": 3}
    assert summarize([2.5]) == {"mean": 2.5, "std": 0.0, "min": 2.5, "max": 2.5, "n": 1}
    with pytest.raises(ValueError, match="values is empty"):
        summarize([])
    with pytest.raises(ValueError, match="values has a non-finite value"):
        summarize([1.0, float("inf")])


# Published worked examples: the test cases and README example of the pure-Python `dieboldmariano`
# package (E. Annunziata, https://github.com/edoannunziata/dieboldmariano), which implements the same
# test (HLN correction, Student t with n − 1 degrees of freedom). Numbers only; our code is independent.
_P1 = [0.3675225224615024, 0.5450608127223211, 0.22044990720021074, 0.8688743471040006, 0.6072512228948467,
       0.8582283746501538, 0.41662295816718187, 0.3812100211114714, 0.7185133356116706, 0.30827323290318875,
       0.4297093624074402, 0.8615974488577858, 0.7240514514808826, 0.3450839595261038, 0.19675301374013598]
_P2 = [0.12794132529988733, 0.3679643204341153, 0.768715420996091, 0.09972248964114683, 0.27197653636654284,
       0.28797629010039505, 0.9160213458582482, 0.6112628048698798, 0.5452873235576241, 0.06785907231746158,
       0.6072666485541124, 0.6241575753989782, 0.39998026828867217, 0.19895665605941748, 0.8094941215215619]


@pytest.mark.parametrize("e_model,e_bench,kwargs,statistic,p_value,tol", [
    ([0, 1, 2, 3, 4, 5], [0, 2, 3, 3, 5, 6], {}, -2.4905, 0.05513, 5e-5),                 # squared loss, h = 1
    (_P1, _P2, {"h": 3, "power": 1, "alternative": "less"}, 1.2109, 0.877, 5e-5),        # absolute loss, h = 3
    ([1, 1, -1, 2, 3], [3, 6, -6, 0, 9], {"alternative": "less"}, -2.2229922805746782, 0.04515565862099125, 1e-12),
])
def test_diebold_mariano_matches_published_examples(e_model, e_bench, kwargs, statistic, p_value, tol):
    """The published values are given to 4-5 digits (the README example to full precision)."""
    out = diebold_mariano(np.array(e_model, float), np.array(e_bench, float), **kwargs)
    assert out["statistic"] == pytest.approx(statistic, abs=tol)
    assert out["p_value"] == pytest.approx(p_value, abs=tol)
