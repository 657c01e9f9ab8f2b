"""Figures and the markdown report (metrics table, small inline figures)."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .ingest import Series  # noqa: E402
from .windowing import Windows  # noqa: E402

#: The source notebooks' published results on the ``notebook`` preset (carried-state evaluation,
#: integer-truncated prices); see ../shared/data/README.md.
PUBLISHED = {
    "rnn": {"mse": 188.20, "mae": 10.88},
    "lstm": {"mse": 187.19, "mae": 10.74},
    "naive": {"mse": 156.67, "mae": 9.11},
}


def _dates(series: Series, windows: Windows, index: np.ndarray) -> np.ndarray:
    offset = len(series.values) - len(windows.values)  # windows use the last values of the series
    return series.dates[offset + index]


def figure_series(series: Series, windows: Windows):
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(series.dates, series.values, lw=0.7, color="0.2")
    for split, color, label in ((windows.train, "tab:blue", "train"), (windows.val, "tab:orange", "validation"),
                                (windows.test, "tab:green", "test")):
        d = _dates(series, windows, split.index)
        ax.axvspan(d[0], d[-1], color=color, alpha=0.15, label=f"{label} targets ({len(split)})")
    ax.set_title(f"{series.source}: {len(series)} values, window {windows.window} → {windows.horizon}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def figure_test_forecast(series: Series, windows: Windows, evaluation: dict):
    preds, test = evaluation["predictions"], windows.test
    d = _dates(series, windows, test.index)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(d, test.actual[:, 0], color="black", lw=1.2, label="actual")
    ax.plot(d, preds["naive"][:, 0], color="0.6", lw=0.9, ls="--", label=f"naive (MAE {evaluation['naive']['mae']:.2f})")
    ax.plot(d, preds["model"][:, 0], color="tab:red", lw=0.9, label=f"model (MAE {evaluation['model']['mae']:.2f})")
    if preds["carried"] is not preds["model"]:
        ax.plot(d, preds["carried"][:, 0], color="tab:purple", lw=0.8, alpha=0.8,
                label=f"model, carried state (MAE {evaluation['carried']['mae']:.2f})")
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


def figure_residuals(series: Series, windows: Windows, evaluation: dict):
    test = windows.test
    resid = evaluation["predictions"]["model"][:, 0] - test.actual[:, 0]
    naive = evaluation["predictions"]["naive"][:, 0] - test.actual[:, 0]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    a1.plot(_dates(series, windows, test.index), resid, lw=0.8, color="tab:red")
    a1.axhline(0, color="0.5", lw=0.6)
    a1.set_title("model residuals (forecast − actual)")
    bins = np.linspace(min(resid.min(), naive.min()), max(resid.max(), naive.max()), 30)
    a2.hist(naive, bins=bins, alpha=0.5, color="0.5", label="naive")
    a2.hist(resid, bins=bins, alpha=0.6, color="tab:red", label="model")
    a2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def make_figures(series: Series, windows: Windows, evaluation: dict, history: dict, best_epoch: int) -> dict:
    """name → matplotlib Figure (closed by :func:`close_figures`)."""
    return {
        "series.png": figure_series(series, windows),
        "test_forecast.png": figure_test_forecast(series, windows, evaluation),
        "loss_curves.png": figure_loss(history, best_epoch),
        "residuals.png": figure_residuals(series, windows, evaluation),
    }


def close_figures(figures: dict) -> None:
    for fig in figures.values():
        plt.close(fig)


def render_png(figures: dict, dpi: int = 110) -> dict[str, bytes]:
    """name → PNG bytes, each figure drawn once."""
    out = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        out[name] = buf.getvalue()
    return out


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


def _row(name: str, m: dict) -> str:
    return (f"| {name} | {m['mse']:.2f} | {m['rmse']:.2f} | {m['mae']:.2f} | {m['mape']:.2f} | {m['smape']:.2f} "
            f"| {m['mase']:.3f} | {m['directional_accuracy']:.3f} |")


def markdown_report(cfg, series: Series, windows: Windows, result, evaluation: dict, forecast: dict,
                    promotion: dict | None, pngs: dict, mlflow_url: str | None = None) -> str:
    lines = [
        f"# Nightly forecast: {cfg.model}, hidden {cfg.hidden_size}, window {cfg.window} → {cfg.horizon}",
        "",
        f"Data: `{series.source}`, {len(series)} values up to {series.dates[-1]}, sha256 `{series.sha256[:12]}…`; "
        f"{len(windows.train)} train / {len(windows.val)} validation / {len(windows.test)} test windows"
        f"{f' (preset `{cfg.preset}`)' if cfg.preset else ''}.",
        f"Training: {result.epochs_run} epochs in {result.seconds:.1f} s on the `{result.backend}` backend, "
        f"best validation epoch {result.best_epoch}{' (stopped early)' if result.stopped_early else ''}; "
        f"weights sha256 `{result.weights_sha256[:12]}…`.",
        "",
        "## Next values",
        "",
        "| date | forecast |",
        "|---|---|",
        *[f"| {d} | {v:.2f} |" for d, v in zip(forecast["dates"], forecast["values"])],
        "",
        "## Test metrics (original units)",
        "",
        "| forecast | MSE | RMSE | MAE | MAPE % | sMAPE % | MASE | directional acc. |",
        "|---|---|---|---|---|---|---|---|",
        _row("model (stateless)", evaluation["model"]),
        _row("model (carried state)", evaluation["carried"]),
        _row("naive (tomorrow = today)", evaluation["naive"]),
        _row("random walk with drift", evaluation["drift"]),
    ]
    if cfg.preset == "notebook":
        lines += ["", "Source notebooks' published results (carried state, integer-truncated prices):", "",
                  "| model | MSE | MAE |", "|---|---|---|"]
        lines += [f"| {k} | {v['mse']:.2f} | {v['mae']:.2f} |" for k, v in PUBLISHED.items()]
    best = min(("model", "carried"), key=lambda k: evaluation[k]["mae"])
    verdict = "beats" if evaluation[best]["mase"] < 1 else "does not beat"
    lines += ["", f"The model {verdict} the naive forecast on test MAE (MASE {evaluation[best]['mase']:.3f})."]
    if promotion is not None:
        prev = (f"v{promotion['previous_version']} (test MAE {promotion['previous_test_mae']:.3f})"
                if promotion["previous_version"] else "none")
        lines += ["", f"**Registry:** `{cfg.model_name}` version {promotion['version']} is the "
                  f"**{promotion['status']}** (previous champion: {prev})."]
    if mlflow_url:
        lines += ["", f"[Open the MLflow run]({mlflow_url})"]
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({inline_png(png)})" for name, png in pngs.items()]
    return "\n".join(lines)
