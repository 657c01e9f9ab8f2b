"""Figures and the markdown report (metrics table, small inline figures): what a run shows people.

Pure: figures and text from the run's records; :mod:`flows.runtime.tracking` stores them in MLflow
and the ``write_report`` task publishes the markdown in Prefect.
"""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import statistical  # noqa: E402
from .backtest import SweepEntry  # noqa: E402
from .config import RunConfig  # noqa: E402
from .evaluation import Evaluation, Forecast  # noqa: E402
from .panel import Panel  # noqa: E402
from .realized import Realized  # noqa: E402
from .training import TrainResult  # noqa: E402
from .windowing import Windows  # noqa: E402

#: The source notebooks' published results on the ``notebook`` preset (carried-state evaluation,
#: integer-truncated prices); see ../shared/data/README.md.
PUBLISHED = {
    "rnn": {"mse": 188.20, "mae": 10.88},
    "lstm": {"mse": 187.19, "mae": 10.74},
    "naive": {"mse": 156.67, "mae": 9.11},
}


def figure_series(series: Panel, windows: Windows):
    """The first series with its splits (of a panel: the first series windowed)."""
    fig, ax = plt.subplots(figsize=(9, 3.2))
    first = int(np.flatnonzero(series.ids == windows.ids[0])[0])
    times, values = series.series(first)
    ax.plot(times, values, lw=0.7, color="0.2")
    for split, color, label in ((windows.train, "tab:blue", "train"), (windows.val, "tab:orange", "validation"),
                                (windows.test, "tab:green", "test")):
        d = split.dates[split.series == 0, 0]
        ax.axvspan(d[0], d[-1], color=color, alpha=0.15, label=f"{label} targets ({int(np.sum(split.series == 0))})")
    of = f" (series {windows.ids[0]}, 1 of {windows.n_series})" if windows.n_series > 1 else ""
    ax.set_title(f"{series.source}{of}: {len(values)} values, window {windows.window} → {windows.horizon}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def figure_test_forecast(windows: Windows, evaluation: Evaluation):
    test = windows.test
    first = test.series == 0
    preds = {k: v[first] for k, v in evaluation.predictions.items()}
    d = test.dates[first, 0]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(d, test.actual[first, 0], color="black", lw=1.2, label="actual")
    ax.plot(d, preds["naive"][:, 0], color="0.6", lw=0.9, ls="--", label=f"naive (MAE {evaluation.naive.mae:.2f})")
    ax.plot(d, preds["model"][:, 0], color="tab:red", lw=0.9, label=f"model (MAE {evaluation.model.mae:.2f})")
    if evaluation.predictions["carried"] is not evaluation.predictions["model"]:
        ax.plot(d, preds["carried"][:, 0], color="tab:purple", lw=0.8, alpha=0.8,
                label=f"model, carried state (MAE {evaluation.carried.mae:.2f})")
    ax.set_title("test: one-step forecasts vs actual")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_loss(history: dict, best_epoch: int):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.semilogy(epochs, history["train_loss"], label="train")
    ax.semilogy(epochs, history["val_loss"], label="validation")
    ax.axvline(best_epoch, color="0.5", ls=":", label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (scaled units)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_residuals(windows: Windows, evaluation: Evaluation):
    test = windows.test
    first = test.series == 0
    resid = evaluation.predictions["model"][first, 0] - test.actual[first, 0]
    naive = evaluation.predictions["naive"][first, 0] - test.actual[first, 0]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    a1.plot(test.dates[first, 0], resid, lw=0.8, color="tab:red")
    a1.axhline(0, color="0.5", lw=0.6)
    a1.set_title("model residuals (forecast − actual)")
    bins = np.linspace(min(resid.min(), naive.min()), max(resid.max(), naive.max()), 30)
    a2.hist(naive, bins=bins, alpha=0.5, color="0.5", label="naive")
    a2.hist(resid, bins=bins, alpha=0.6, color="tab:red", label="model")
    a2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_panel(windows: Windows, evaluation: Evaluation):
    """A panel at a glance: the distribution of per-series MASE (model and the strongest baseline), and the test
    forecasts of the best and the worst series."""
    t, test = evaluation.per_series, windows.test
    bar, _ = evaluation.strongest_baseline()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    ax = axes[0]
    both = np.concatenate([t["model_mase"], t[f"{bar}_mase"]])
    both = both[np.isfinite(both) & (both > 0)]
    bins = np.geomspace(both.min(), both.max(), 25) if len(both) and both.max() > both.min() else 10
    ax.hist(t[f"{bar}_mase"], bins=bins, alpha=0.5, color="0.5", label=Evaluation.label(bar))
    ax.hist(t["model_mase"], bins=bins, alpha=0.6, color="tab:red", label="model")
    ax.set_xscale("log")
    ax.axvline(1, color="0.3", lw=0.7, ls=":")
    ax.set_xlabel("MASE per series (log scale; 1 = in-sample naive)")
    ax.set_title(f"{windows.n_series} series")
    ax.legend(fontsize=7)
    order = np.argsort(t["model_mase"])
    for ax, s, which in ((axes[1], order[0], "best"), (axes[2], order[-1], "worst")):
        rows = np.flatnonzero(test.series == s)
        if windows.horizon == 1:     # one-step forecasts over every test window
            d, actual = test.dates[rows, 0], test.actual[rows, 0]
            model, base = evaluation.predictions["model"][rows, 0], evaluation.predictions[bar][rows, 0]
        else:                        # the last test window's path, after the window it starts from
            r = rows[-1]
            d, actual = test.dates[r], test.actual[r]
            model, base = evaluation.predictions["model"][r], evaluation.predictions[bar][r]
            lo = test.index[r] - windows.window
            ax.plot(windows.dates[lo:test.index[r]], windows.values[lo:test.index[r]], color="0.4", lw=0.8)
        ax.plot(d, actual, color="black", lw=1.1, label="actual")
        ax.plot(d, base, color="0.5", lw=0.9, ls="--", label=Evaluation.label(bar))
        ax.plot(d, model, color="tab:red", lw=0.9, label="model")
        ax.set_title(f"{which}: {t['unique_id'][s]} (MASE {t['model_mase'][s]:.2f})", fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=30)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_realized(real: Realized):
    """Realized error over nights: each night's MAE of the model, naive and seasonal naive forecasts (dots) and
    their rolling mean over the last ``window`` nights (lines)."""
    fig, ax = plt.subplots(figsize=(9, 3.2))
    nights = real.nights
    x = pd.to_datetime(nights["origin"])
    for name, label, color in (("model", "model", "C0"), ("naive", "naive", "C1"), ("snaive", "seasonal naive", "C2")):
        y = nights[f"{name}_mae"]
        ax.plot(x, y, ".", color=color, alpha=0.35, markersize=4)
        ax.plot(x, y.rolling(real.window, min_periods=1).mean(), color=color, lw=1.6,
                label=f"{label} (rolling {real.window})")
    ax.set_title("realized error over nights: model vs naive vs seasonal naive")
    ax.set_xlabel("forecast origin (night)")
    ax.set_ylabel("realized MAE")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def render_png(figures: dict, dpi: int = 110) -> dict[str, bytes]:
    """name → PNG bytes of each figure, drawn once; the figures are closed."""
    out = {}
    try:
        for name, fig in figures.items():
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi)
            out[name] = buf.getvalue()
    finally:
        for fig in figures.values():
            plt.close(fig)
    return out


def run_figures(series: Panel, windows: Windows, evaluation: Evaluation, result: TrainResult) -> dict[str, bytes]:
    """The nightly run's figures as PNG bytes, by file name (a panel's distribution and best/worst series first)."""
    figures = {"panel.png": figure_panel(windows, evaluation)} if windows.n_series > 1 else {}
    return render_png({
        **figures,
        "series.png": figure_series(series, windows),
        "test_forecast.png": figure_test_forecast(windows, evaluation),
        "loss_curves.png": figure_loss(result.history, result.best_epoch),
        "residuals.png": figure_residuals(windows, evaluation),
    })


def inline_png(png: bytes, width: int = 400) -> str:
    """A small PNG data URL (~20 KB) that renders inside a Prefect markdown artifact.

    Downscaled from the full-size PNG (Pillow, a matplotlib dependency) instead of drawing the
    figure a second time.
    """
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im.thumbnail((width, width * 4), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="png", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _row(name: str, m) -> str:
    return (f"| {name} | {m.mse:.2f} | {m.rmse:.2f} | {m.mae:.2f} | {m.mape:.2f} | {m.smape:.2f} "
            f"| {m.mase:.3f} | {m.mase_snaive:.3f} | {m.directional_accuracy:.3f} |")


def panel_lines(windows: Windows, evaluation: Evaluation, per_series: bool = False) -> list[str]:
    """The panel section: MASE across series (each scaled by its own in-sample naive MAE), shares, best and worst."""
    agg, t = evaluation.panel(), evaluation.per_series
    names = {"model": "model", **{b: Evaluation.label(b) for b in evaluation.baselines()}}
    order = np.argsort(t["model_mase"])
    worst, best = order[::-1][:3], order[:3]

    def named(rows) -> str:
        return ", ".join(f"`{t['unique_id'][i]}` ({t['model_mase'][i]:.2f})" for i in rows)

    return [
        f"## Across the {windows.n_series} series ({'one network per series' if per_series else 'one global model'})",
        "",
        "| forecast | mean MASE | median MASE | series where the model's MAE is lower |",
        "|---|---|---|---|",
        *[f"| {names[k]} | {agg[f'{k}_mase_mean']:.3f} | {agg[f'{k}_mase_median']:.3f} | "
          f"{'' if k == 'model' else format(agg[f'share_beating_{k}'], '.0%')} |" for k in names],
        "",
        "MASE: each series' test MAE divided by its own in-sample one-step naive MAE (Hyndman).",
        f"Best series: {named(best)}; worst: {named(worst)}."
        + (f" {len(windows.skipped)} series too short for one window, left out: "
           f"{', '.join(f'`{x}`' for x in windows.skipped[:10])}{'…' if len(windows.skipped) > 10 else ''}."
           if windows.skipped else ""),
    ]


def stat_lines(cfg: RunConfig, evaluation: Evaluation) -> list[str]:
    """What the report says about the statistical baselines: not installed, or the series they fell back on."""
    lines = []
    if cfg.data.stat_baselines == "auto" and not statistical.installed():
        lines += ["", f"No statistical baseline (AutoETS): statsforecast is not installed ({statistical.INSTALL_HINT})."]
    for name, failed in evaluation.stat_failed.items():
        if failed:
            lines += ["", f"{Evaluation.label(name)} could not be fitted on {len(failed)} series, which get the naive "
                          f"forecast in its place: " + "; ".join(f"`{f}`" for f in failed[:5])
                      + ("…" if len(failed) > 5 else "") + "."]
    return lines


def markdown_report(cfg: RunConfig, series: Panel, windows: Windows, result: TrainResult, evaluation: Evaluation,
                    forecast: Forecast, registry: str, pngs: dict, mlflow_url: str | None = None) -> str:
    """The nightly report; ``registry`` is the sentence on the registered version (markdown)."""
    lines = [
        f"# Nightly forecast: {cfg.model.model}, hidden {cfg.model.hidden_size}, window {windows.window} → "
        f"{windows.horizon}",
        "",
        f"Data: `{series.source}`, {len(series)} values of {series.n_series} series at frequency `{series.freq}` up "
        f"to {series.last.max()}, "
        f"sha256 `{series.sha256[:12]}…`; "
        f"{len(windows.train)} train / {len(windows.val)} validation / {len(windows.test)} test windows"
        f"{f' (preset `{cfg.preset}`)' if cfg.preset else ''}.",
        (f"Training: one network per series, {result.epochs_run} epochs in all, {result.seconds:.1f} s of training "
         f"on the `{result.backend}` backend, median best validation epoch {result.best_epoch} "
         f"(per_series_training.csv); " if cfg.model.per_series else
         f"Training: {result.epochs_run} epochs in {result.seconds:.1f} s on the `{result.backend}` backend, "
         f"best validation epoch {result.best_epoch}{' (stopped early)' if result.stopped_early else ''}; ")
        +
        f"weights sha256 `{result.weights_sha256[:12]}…`.",
        "",
        "## Next values",
        "",
        *(["| date | forecast |", "|---|---|", *[f"| {d} | {v:.2f} |" for d, v in forecast.rows()]]
          if not forecast.note else [f"No forecast: {forecast.note}."]),
        "",
        "## Test metrics (original units)",
        "",
        "| forecast | MSE | RMSE | MAE | MAPE % | sMAPE % | MASE (vs naive) | MASE (vs seasonal naive) | "
        "directional acc. |",
        "|---|---|---|---|---|---|---|---|---|",
        _row("model (stateless)", evaluation.model),
        _row("model (carried state, shown for reference)", evaluation.carried),
        _row("naive (tomorrow = today)", evaluation.naive),
        _row(f"seasonal naive (season {evaluation.season})", evaluation.snaive),
        _row("random walk with drift", evaluation.drift),
        *[_row(Evaluation.label(name), sc) for name, sc in evaluation.statistical.items()],
    ]
    lines += stat_lines(cfg, evaluation)
    if cfg.preset == "notebook":
        lines += ["", "Source notebooks' published results (carried state, integer-truncated prices):", "",
                  "| model | MSE | MAE |", "|---|---|---|"]
        lines += [f"| {k} | {v['mse']:.2f} | {v['mae']:.2f} |" for k, v in PUBLISHED.items()]
    if windows.n_series > 1:
        lines += ["", *panel_lines(windows, evaluation, cfg.model.per_series)]
    name, bar = evaluation.strongest_baseline()
    verdict = "beats" if evaluation.model.mae < bar.mae else "does not beat"
    lines += ["", f"The model {verdict} the strongest baseline, the {Evaluation.label(name)} forecast, on test MAE "
              f"({evaluation.model.mae:.2f} vs {bar.mae:.2f}; ratio {evaluation.model.mae / bar.mae:.3f}). The "
              "carried-state row is for reference: the verdict never chooses a mode on the test set.", "", registry]
    if mlflow_url:
        lines += ["", f"[Open the MLflow run]({mlflow_url})"]
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({inline_png(png)})" for name, png in pngs.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------
def sweep_table(entries: list[SweepEntry], level: float) -> str:
    """The markdown comparison table, best mean test MAE first, with the naive and drift rows."""
    e0 = entries[0]
    naive, drift = e0.stat('mean_naive_test_mae'), e0.stat('mean_drift_test_mae')
    lines = ["| configuration | test MAE (mean ± sd over folds) | MASE | carried MAE | DM p vs naive | "
             f"lag-copy peak (r₁) | {level:.0%} interval coverage | width | seconds |", "|" + "---|" * 9]
    for e in entries:
        s, dm, lag = e.result.summary, e.result.dm, e.result.lag
        lines.append(
            f"| {e.label} | {s['mean_test_mae']:.3f} ± {s['std_test_mae']:.3f} | {s['mean_test_mase']:.3f} | "
            f"{s['mean_carried_test_mae']:.3f} | {dm['p_value']:.3g} | {lag['peak_lag']:+d} ({lag['r1']:.2f}) | "
            f"{s['mean_coverage']:.3f} | {s['mean_interval_width']:.1f} | {e.result.seconds:.0f} |")
    lines.append(f"| naive (tomorrow = today) | {naive:.3f} ± {e0.stat('std_naive_test_mae'):.3f} | 1.000 "
                 "| | | | | | |")
    lines.append(f"| random walk with drift | {drift:.3f} ± {e0.stat('std_drift_test_mae'):.3f} | {drift / naive:.3f} "
                 "| | | | | | |")
    return "\n".join(lines)


def sweep_csv(entries: list[SweepEntry]) -> str:
    columns = ("mean_test_mae", "std_test_mae", "mean_test_mase", "mean_carried_test_mae", "dm_statistic", "dm_p_value",
               "lag_copy_peak_lag", "lag_copy_r1", "mean_coverage", "mean_interval_width", "seconds")
    rows = [",".join(["config", "run_id", *columns])]
    rows += [",".join([e.label, e.run_id, *(str(e.result.metrics()[c]) for c in columns)]) for e in entries]
    return "\n".join(rows) + "\n"


def comparison_figure(entries: list[SweepEntry]):
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(entries) + 1.6))
    y = np.arange(len(entries))[::-1]
    maes = [[f["test_mae"] for f in e.result.per_fold] for e in entries]
    means = [e.stat('mean_test_mae') for e in entries]
    lo = [m - min(f) for m, f in zip(means, maes)]
    hi = [max(f) - m for m, f in zip(means, maes)]
    naive, drift = entries[0].stat('mean_naive_test_mae'), entries[0].stat('mean_drift_test_mae')
    ax.errorbar(means, y, xerr=[lo, hi], fmt="o", color="tab:red", capsize=3, label="model: mean, fold range")
    ax.axvline(naive, color="0.3", ls="--", label=f"naive {naive:.2f}")
    ax.axvline(drift, color="0.6", ls=":", label=f"drift {drift:.2f}")
    ax.set_yticks(y, [e.label for e in entries], fontsize=8)
    ax.set_xlabel("test MAE (original units), mean over walk-forward folds")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def sweep_markdown(entries: list[SweepEntry], table: str, png: bytes, mlflow_url: str | None,
                   dashboard: str | None = None) -> str:
    best = entries[0]
    verdict = "beats" if best.stat('mean_test_mase') < 1 else "does not beat"
    p = best.result.dm["p_value"]
    significant = "significant" if p < 0.05 else "not significant"
    return "\n".join([
        f"# Sweep: {len(entries)} configurations, {len(best.result.per_fold)} walk-forward folds",
        "", f"**Best configuration: `{best.label}`** — mean test MAE {best.stat('mean_test_mae'):.3f}; it {verdict} "
        "the "
        f"naive forecast (MASE {best.stat('mean_test_mase'):.3f}; Diebold–Mariano p = {p:.3g}, {significant} at 5%).",
        "", table, "",
        "DM: two-sided test of equal squared error against the naive forecast on every fold's test points "
        "(Harvey–Leybourne–Newbold correction). Lag-copy: the lag k maximising corr(Δforecast_t, Δactual_{t−k}); "
        "+1 with r₁ near 1 means the model mostly repeats the last value.",
        *(["", f"[Open the parent run in MLflow]({mlflow_url})"] if mlflow_url else []),
        *(["", f"[The Dask dashboard]({dashboard}) of the cluster the configurations ran on"] if dashboard else []),
        "", f"![comparison]({inline_png(png, width=600)})"])
