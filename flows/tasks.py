"""The pipeline's stages as Prefect tasks: each calls the pure function of its stage and records what it did.

Retries: only :func:`load_series` reaches the outside world, and it is retried with backoff when
the source could not be reached (an ``OSError``: connection refused, time-out, HTTP 5xx), never
for bad data (:class:`~flows.core.sources.DataError` fails at once). The delays are
``$NNFORECAST_IO_RETRY_DELAYS`` seconds (default ``10,60,300``: three retries).
"""
from __future__ import annotations

from flows.runtime import env  # noqa: F401  (environment defaults before prefect/mlflow import)

import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from flows.core import covariates, ingest, realized, report, statistical, windowing
from flows.core.calendar import compact_times, next_dates
from flows.core.config import PARAMETERS, DataSpec, ModelSpec, RunConfig, TrackingSpec, TrainSpec, WindowSpec
from flows.core.covariates import MissingFuture
from flows.core.evaluation import Evaluation, Forecast, evaluate, forecast_next, next_baselines
from flows.core.panel import Panel
from flows.core.model_io import (forecast_frame, forecaster_from, load_forecaster, save_forecaster,
                                 warm_start_weights)
from flows.core.composite import Ensemble, LocalModels
from flows.core.training import TrainResult, build, combine, train
from flows.core.realized import Realized
from flows.core.windowing import Windows
from flows.runtime import alerts, ledger, tracking
from flows.runtime.progress import Progress
from flows.runtime.tracking import Promotion, Run

log = logging.getLogger("nnforecast")

#: Every stage runs uncached: the registry's run key decides what a rerun skips, and hashing the inputs (a whole
#: panel's windows, trained models whose compiled layers do not pickle) was wasted work that logged an error.
stage = partial(task, cache_policy=NO_CACHE)

IO_RETRY_DELAYS = [float(s) for s in os.environ.get("NNFORECAST_IO_RETRY_DELAYS", "10,60,300").split(",") if s.strip()]


def last_test_history(windows: Windows, series: int) -> pd.DataFrame:
    """A model with covariates: the history of the last test window of the first ``series`` series with its
    covariates, and the ``horizon`` rows after it (y empty, the known-in-advance covariates filled), as the served
    model takes them; its forecast is that window's test forecast."""
    W, h, cov, test = windows.window, windows.horizon, windows.covariates, windows.test
    P, K = len(cov.past_names), len(cov.known_names)
    columns = cov.all()[:, :P + K]
    frames = []
    for s in range(min(series, windows.n_series)):
        origin = int(test.index[np.flatnonzero(test.series == s)[-1]])
        hist, ahead = np.arange(origin - W, origin), np.arange(origin, origin + h)
        block = np.concatenate([columns[hist], columns[ahead]])
        block[W:, :P] = np.nan                       # observed covariates are not known ahead
        frame = pd.DataFrame({"unique_id": str(windows.ids[s]), "ds": windows.dates[np.r_[hist, ahead]],
                              "y": np.r_[windows.values[hist], np.full(h, np.nan)]})
        frames.append(frame.assign(**{c: block[:, k] for k, c in enumerate((*cov.past_names, *cov.known_names))}))
    return pd.concat(frames, ignore_index=True)


def recent_history(windows: Windows, series: int) -> pd.DataFrame:
    """The last ``window`` values of the first ``series`` series, as the served model takes them."""
    W = windows.window
    rows = [np.arange(e - W, e) for e in windows.ends[:series]]
    pos = np.concatenate(rows)
    return pd.DataFrame({"unique_id": np.repeat(windows.ids[:series].astype(str), W), "ds": windows.dates[pos],
                         "y": windows.values[pos]})


def say(message: str) -> None:
    """Short progress line: to the console and, inside a run, to the Prefect UI."""
    log.info(message)
    try:
        get_run_logger().info(message)
    except MissingContextError:  # called outside a flow or task run (e.g. task.fn in a unit test)
        pass


@dataclass(frozen=True)
class RunSummary:
    """What one nightly run did: the flow's return value and the command line's last lines."""

    run_id: str                     # the MLflow run
    version: str                    # the registered model version (the existing one when nothing changed)
    status: str                     # champion | challenger | unchanged
    test_mae: float
    naive_test_mae: float
    forecast: Forecast
    previous_version: str | None = None


def show_config(cfg: RunConfig) -> None:
    """Every parameter of the run, its section and where its value came from, as a table in the Prefect UI."""
    shown = cfg.public()
    rows = [{"parameter": name, "section": section, "value": repr(shown[name]), "from": cfg.origin(name)}
            for name, (section, _) in PARAMETERS.items()]
    create_table_artifact(rows, key="run-config", description=f"preset {cfg.preset or 'none'}; "
                          f"{sum(r['from'] == 'given' for r in rows)} parameters given")


# ----------------------------------------------------------------------------------------------
# The stages
# ----------------------------------------------------------------------------------------------
def _retry_io_only(task, task_run, state) -> bool:
    """Retry when the source could not be reached; bad data fails at once (reading it again cannot help)."""
    return isinstance(state.result(raise_on_failure=False), OSError)


@stage(retries=len(IO_RETRY_DELAYS), retry_delay_seconds=IO_RETRY_DELAYS or 0, retry_condition_fn=_retry_io_only)
def load_series(spec: DataSpec, positive: bool, run_id: str) -> Panel:
    """Read and validate the series (download once into the cache when needed)."""
    panel = ingest.load_series(spec, positive)
    Run(run_id).set_tags({"data_sha256": panel.sha256, "data_source": panel.source, "data_freq": panel.freq,
                          "data_series": panel.n_series, "data_last_date": str(panel.last.max()),
                          "data_rows": len(panel), "data_filled": panel.filled})
    say(f"loaded {len(panel)} values of {panel.source}: {panel.n_series} series at frequency {panel.freq} "
        f"({panel.times.min()} … {panel.last.max()}){f'; {panel.filled} values filled' if panel.filled else ''}")
    return panel


@stage
def make_windows(series: Panel, data: DataSpec, spec: WindowSpec, dtype: str) -> Windows:
    """Cut every series into scaled windows and chronological train/validation/test parts, with the covariates
    the run names (``data``: ``--n-values``, ``--season``, the covariates and calendar features)."""
    used = series.tail(data.n_values)
    covs = covariates.of_panel(used, data.past_covariates, data.future_covariates, data.calendar)
    windows = windowing.window_panel(used.values, used.offsets, spec, np.dtype(dtype), used.times, used.freq,
                                     data.season, used.ids, covs)
    say(f"windows: {len(windows.train)} train / {len(windows.val)} validation / {len(windows.test)} test"
        f"{f' from {windows.n_series} series' if series.n_series > 1 else ''}"
        + (f"; inputs: the value and {covs.channels} covariate channel(s): observed "
           f"{', '.join(covs.past_names) or 'none'}, known in advance {', '.join(covs.future_names) or 'none'}"
           if covs else "")
        + (f"; {len(windows.skipped)} series too short, left out: {list(windows.skipped)[:10]}" if windows.skipped
           else ""))
    return windows


@stage
def train_model(windows: Windows, model: ModelSpec, training: TrainSpec, tracking_spec: TrackingSpec,
                training_key: str, run_id: str) -> TrainResult:
    """Train, keep the best validation epoch; per-epoch metrics and checkpoints go to MLflow.

    With ``resume`` the training continues from the named run's last checkpoint (the interrupted
    run is marked KILLED); the result is the weights an uninterrupted run would have.
    """
    run = Run(run_id)
    epoch_logger = run.epoch_logger()
    resume = init = None
    if training.init == "champion" and not tracking_spec.resume:
        init, started = warm_start(windows, model, training, tracking_spec.model_name)
        if init is not None and training.warm_epochs:
            training = dataclasses.replace(training, epochs=training.warm_epochs)
        run.set_tags({"init_from": started, "init_warm": init is not None})
        say(f"starting weights: {started}")
    if tracking_spec.resume:
        source_run = tracking.resumable_run(tracking_spec.experiment, tracking_spec.resume, training_key)
        resume = tracking.load_checkpoint(source_run, training_key)
        run.set_tags({"resumed_from": source_run, "resumed_after_epoch": resume.epoch})
        if source_run != run_id:
            Run(source_run).end("KILLED")
        say(f"resuming run {source_run} after epoch {resume.epoch}")

    progress = Progress("training-progress", training.epochs, "epochs trained")

    def on_epoch(epoch: int, m: dict) -> None:
        epoch_logger(epoch, m)
        if epoch % training.log_every == 0 or epoch == 1 or epoch == training.epochs:
            progress.update(epoch, f"; validation loss {m['val_loss']:.3e}")
            say(f"epoch {epoch:4d}/{training.epochs}  train {m['train_loss']:.3e}  val {m['val_loss']:.3e}  "
                f"grad {m['grad_norm']:.2e}  {m['epoch_seconds'] * 1000:.0f} ms")

    def on_checkpoint(ckpt) -> None:
        epoch_logger.flush()  # the metrics up to the checkpoint are in MLflow before it is
        run.log_checkpoint(ckpt, training_key)
        say(f"checkpoint after epoch {ckpt.epoch}")

    try:
        result = train(windows, model, training, on_epoch, on_checkpoint=on_checkpoint, resume=resume, init=init)
    finally:
        epoch_logger.flush()
    log_training(run, result)
    progress.finish(f"{result.epochs_run} of {training.epochs}{' (stopped early)' if result.stopped_early else ''}; "
                    f"best epoch {result.best_epoch}")
    say(f"trained {result.epochs_run} epochs in {result.seconds:.1f} s on {result.backend}; "
        f"best validation epoch {result.best_epoch}")
    return result


def warm_start(windows: Windows, model: ModelSpec, training: TrainSpec, model_name: str) -> tuple[dict | None, str]:
    """``--init champion``: the champion's weights when they fit tonight's model, and what the training starts from
    (the champion's version and weights hash, or why it starts from random weights)."""
    cold = f"random weights (seed {training.seed})"
    found = tracking.champion_weights(model_name)
    if found is None:
        return None, f"{cold}: {model_name} has no champion yet"
    version, config, weights = found
    rng = np.random.default_rng(training.seed)
    fresh = build(model, windows, rng) if training.ensemble == 1 else \
        Ensemble([build(model, windows, rng) for _ in range(training.ensemble)])
    init, reason = warm_start_weights(config, weights, fresh)
    if init is None:
        return None, f"{cold}: the champion v{version} does not fit: {reason}"
    return init, f"the champion v{version} (weights sha256 {config.get('weights_sha256', '?')[:12]}…)"


def log_training(run: Run, result: TrainResult) -> None:
    """A training's outcome on its MLflow run: the kernel backend, the weights' hash, best epoch, loss and time."""
    run.set_tags({"kernel_backend": result.backend, "weights_sha256": result.weights_sha256})
    run.log_metrics({"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                     "train_seconds": result.seconds, "epochs_run": result.epochs_run})


@stage(task_run_name="train-series-{name}")
def train_series(windows: Windows, name: str, model: ModelSpec, training: TrainSpec) -> TrainResult:
    """``--per-series``: one series' own network, trained on its windows alone (``Windows.only``; no per-epoch
    MLflow metrics or checkpoints: the combined run logs each series' outcome in ``per_series_training.csv``)."""
    return train(windows, model, training)


@stage
def combine_series_models(results: list[TrainResult], windows: Windows, run_id: str) -> TrainResult:
    """The per-series networks as one model; each series' best epoch, epochs, seconds and validation loss logged."""
    result = combine(results, LocalModels([r.model for r in results]))
    table = pd.DataFrame({"unique_id": windows.ids.astype(str), "best_epoch": [r.best_epoch for r in results],
                          "epochs_run": [r.epochs_run for r in results],
                          "best_val_loss": [r.best_val_loss for r in results],
                          "seconds": [r.seconds for r in results]})
    run = Run(run_id)
    run.log_files({"per_series_training.csv": table.to_csv(index=False).encode()})
    log_training(run, result)
    say(f"trained {len(results)} per-series networks: {result.epochs_run} epochs in {result.seconds:.1f} s; "
        f"median best validation epoch {result.best_epoch}")
    return result


@stage
def evaluate_model(result: TrainResult, windows: Windows,
                   stat_baselines: str = "auto") -> tuple[Evaluation, Forecast]:
    """Test metrics (stateless and carried state) against the naive, seasonal naive, drift and statistical
    baselines, and the next forecast."""
    evaluation = evaluate(result.model, windows, statistical.parse(stat_baselines))
    try:
        forecast = forecast_next(result.model, windows)
    except MissingFuture as e:   # evaluated, registered; the next values wait for the known covariates
        forecast = Forecast.none(str(e))
        say(f"no forecast: {e}")
    name, best = evaluation.strongest_baseline()
    say(f"test MAE {evaluation.model.mae:.3f} (carried {evaluation.carried.mae:.3f}) vs naive "
        f"{evaluation.naive.mae:.3f}, seasonal naive ({evaluation.season}) {evaluation.snaive.mae:.3f}: MASE "
        f"{evaluation.model.mase:.3f}; strongest baseline: {Evaluation.label(name)} ({best.mae:.3f})")
    return evaluation, forecast


@stage
def log_results(series: Panel, windows: Windows, result: TrainResult, evaluation: Evaluation, forecast: Forecast,
                run_id: str, figures: bool = True) -> dict[str, bytes]:
    """Final metrics (pooled, and across series: ``panel_*``), the figures, ``forecasts.csv`` (every series' next
    values) and ``per_series.csv`` to the MLflow run; returns the figures (PNG bytes)."""
    run = Run(run_id)
    one = {f"forecast_{i + 1}": v for i, (_, v) in enumerate(forecast.rows())} if windows.n_series == 1 else {}
    run.log_metrics({**evaluation.metrics(), **{f"panel_{k}": v for k, v in evaluation.panel().items()}, **one})
    pngs = report.run_figures(series, windows, evaluation, result) if figures else {}
    if pngs:
        run.log_files(pngs, "figures")
    run.log_files({"forecasts.csv": forecast.frame().to_csv(index=False).encode(),
                   "per_series.csv": pd.DataFrame(evaluation.per_series).to_csv(index=False).encode()})
    if windows.skipped:
        run.set_tags({"series_skipped": len(windows.skipped)})
        run.log_files({"skipped_series.txt": ("\n".join(windows.skipped) + "\n").encode()})
    return pngs


@stage
def publish_model(series: Panel, windows: Windows, result: TrainResult, evaluation: Evaluation, model_name: str,
                  run_key: str, forecast_key: str, run_id: str, verdict: realized.Verdict | None = None) -> Promotion:
    """Save the model (weights + JSON, no pickle), register a version, make it champion if it beats the champion."""
    run = Run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_forecaster(result.model, windows, Path(tmp) / "model",
                                    {"data_sha256": series.sha256, "weights_sha256": result.weights_sha256})
        forecaster = load_forecaster(model_dir)
        if windows.covariates is not None:   # history with its covariates and the known ones ahead
            example = last_test_history(windows, series=2)
            prediction = forecast_frame(forecaster, example)
        elif windows.n_series == 1:  # a window of values in, the next values out
            example = windows.values[-windows.window:][None, :]
            prediction = forecaster.predict(example)
        else:  # a panel: recent history in long format in, the forecasts table out
            example = recent_history(windows, series=2)
            prediction = forecast_frame(forecaster, example)
        version = tracking.log_model(run, model_dir, example, prediction, model_name)
    run.client.set_model_version_tag(model_name, version, "run_key", run_key)
    promotion = tracking.promote(model_name, version, evaluation.model.mase, forecast_key, verdict)
    run.set_tags({"model_version": version, "model_role": promotion.status})
    say(f"registered {model_name} v{version}: {promotion.status}")
    return promotion


@stage
def champion_forecast(windows: Windows, forecast: Forecast, model_name: str, forecast_key: str) -> pd.DataFrame | None:
    """What the current champion forecasts for tonight's targets from tonight's data (its own saved scaling), to be
    scored beside the new version's: ``unique_id, step, yhat, model_version``; None when there is no champion or it
    cannot be compared (it forecasts other data, reads covariates, or does not know tonight's series)."""
    if forecast.note or not len(forecast.yhat):
        return None
    found = tracking.champion_weights(model_name)
    if found is None:
        return None
    version, config, weights = found
    champion = tracking.client().get_model_version_by_alias(model_name, tracking.CHAMPION)
    why = None
    if champion.tags.get("forecast_key") != forecast_key:
        why = "it forecasts other data"
    elif config.get("covariates") or config["horizon"] != windows.horizon:
        why = "it reads covariates" if config.get("covariates") else f"its horizon is {config['horizon']}"
    if why is None:
        try:
            frame = forecast_frame(forecaster_from(config, weights), recent_history(windows, windows.n_series))
        except ValueError as e:   # e.g. a series the champion was not trained on, a longer window than the data
            why = str(e)
    if why is not None:
        say(f"the champion v{version} is not scored beside tonight's forecast: {why}")
        return None
    mine = pd.DataFrame({"unique_id": forecast.unique_id.astype(str), "step": forecast.step,
                         "ds": pd.to_datetime(forecast.ds)})
    theirs = frame.assign(unique_id=frame["unique_id"].astype(str), ds=pd.to_datetime(frame["ds"]))
    joined = mine.merge(theirs[["unique_id", "step", "ds", "yhat"]], on=["unique_id", "step", "ds"], how="left")
    if joined["yhat"].isna().any():
        say(f"the champion v{version} is not scored beside tonight's forecast: its targets differ")
        return None
    return joined[["unique_id", "step", "yhat"]].assign(model_version=version)


@stage
def open_forecast_ledger(url: str | None) -> str:
    """Open (create or migrate) the forecast ledger before any work: an unreachable database fails the night
    before anything is trained, registered or written."""
    engine = ledger.open_ledger(url)
    try:
        return ledger.shown(str(engine.url))
    finally:
        engine.dispose()


@stage
def record_forecasts(windows: Windows, forecast: Forecast, url: str | None, model_name: str, version: str,
                     run_id: str, champion: pd.DataFrame | None = None) -> int:
    """The night's published forecasts, with the naive and seasonal naive forecasts of the same targets and, when
    there was one, the champion's forecasts of them (role ``champion``), into the ledger (replacing a rerun's
    earlier rows, in one transaction)."""
    if forecast.note or not len(forecast.yhat):
        return 0
    origin, naive, snaive = next_baselines(windows)
    h = windows.horizon
    rows = pd.DataFrame({"model_name": model_name, "unique_id": forecast.unique_id.astype(str),
                         "origin": np.repeat(origin, h), "step": forecast.step, "ds": forecast.ds,
                         "yhat": forecast.yhat, "naive": naive.ravel(), "snaive": snaive.ravel(),
                         "model_version": str(version), "run_id": run_id, "role": "candidate"})
    if champion is not None and str(champion["model_version"].iloc[0]) != str(version):
        held = rows.drop(columns=["yhat", "model_version"]).merge(champion, on=["unique_id", "step"])
        rows = pd.concat([rows, held.assign(role="champion")[rows.columns]], ignore_index=True)
    engine = ledger.open_ledger(url)
    try:
        n = ledger.record(engine, rows)
    finally:
        engine.dispose()
    Run(run_id).set_tags({"ledger_rows": n})
    say(f"ledger: {n} forecasts of {model_name} v{version} recorded in {ledger.shown(str(engine.url))}")
    return n


@dataclass(frozen=True)
class Scored:
    """What the night's scoring found: the realized errors and their figure (PNG; None before any matured)."""

    realized: Realized
    png: bytes | None
    newly_scored: int


def score_ledger(series: Panel, url: str | None, model_name: str, window: int) -> tuple[int, Realized]:
    """Join the ledger's matured forecasts of ``model_name`` with the values of ``series``; how many were newly
    scored, and the realized errors of every scored one."""
    actuals = pd.DataFrame({"unique_id": np.repeat(series.ids.astype(str), series.lengths), "ds": series.times,
                            "y": series.values})
    engine = ledger.open_ledger(url)
    try:
        n = ledger.score(engine, model_name, actuals)
        rows = ledger.read(engine, model_name)
    finally:
        engine.dispose()
    return n, realized.realized(rows, realized.naive_scales(series.ids, lambda s: series.series(s)[1]), window)


@stage
def score_forecasts(series: Panel, url: str | None, model_name: str, window: int, run_id: str) -> Scored:
    """Before training: join the published forecasts whose target has now been observed with the actual values,
    then log the realized errors (per night, with the night as step and timestamp, and over the last ``window``
    nights and all) and the figure "realized error over nights" to the MLflow run."""
    n, real = score_ledger(series, url, model_name, window)
    run = Run(run_id)
    png = None
    if real.n_nights:
        nights = real.nights
        run.log_history({f"realized_night_{k}": nights[f"{name}_mae"].to_numpy() for name, k in
                         (("model", "mae"), ("naive", "naive_mae"), ("snaive", "snaive_mae"))},
                        np.arange(1, real.n_nights + 1), nights["origin"].to_numpy())
        run.log_metrics(real.metrics(), step=real.n_nights)
        png = report.render_png({"realized_error.png": report.figure_realized(real)})["realized_error.png"]
        run.log_files({"realized_error.png": png}, "figures")
        run.log_files({"realized_nights.csv": nights.to_csv(index=False).encode(),
                       "realized_by_version.csv": real.by_version.to_csv(index=False).encode()})
    run.set_tags({"realized_scored": n, "realized_nights": real.n_nights})
    say(f"scored {n} matured forecasts of {model_name}. {real.sentence()}")
    return Scored(real, png, n)


class StaleData(RuntimeError):
    """The source's newest value is older than ``--max-staleness``: the upstream feed has stopped."""


@stage
def check_data_advanced(series: Panel, data: DataSpec, url: str | None, model_name: str, training_key: str,
                        run_id: str) -> str | None:
    """Fail when the newest value is older than ``--max-staleness`` (from now, or from ``--as-of``); return why there
    is nothing to do when it is no newer than the origin of the last successful night's forecasts (made with the
    same training parameters), else None."""
    newest = pd.Timestamp(series.last.max())
    now = pd.Timestamp(data.as_of) if data.as_of else pd.Timestamp.now(tz="UTC").tz_localize(None)
    run = Run(run_id)
    if data.max_staleness is not None and now - newest > pd.Timedelta(data.max_staleness):
        age = now - newest
        run.set_tags({"stale_data": f"newest value {newest} is {age} old"})
        raise StaleData(f"{series.source}: the data is stale: its newest value ({newest}) is {age} old at {now} "
                        f"(--max-staleness {data.max_staleness}); the source has stopped updating; nothing was "
                        "trained or registered")
    engine = ledger.open_ledger(url)
    try:
        nights = ledger.origins(engine, model_name)
    finally:
        engine.dispose()
    # a replayed night (--as-of) is done when its own origin is recorded; a live one when no later origin exists
    done = nights[nights["origin"] == newest] if data.as_of else nights[nights["origin"] >= newest]
    if done.empty:
        return None
    origin, recorded_by = done["origin"].iloc[-1], done["run_id"].iloc[-1]
    try:
        before = run.client.get_run(recorded_by)
    except MlflowException:   # the run that recorded it is gone: train
        return None
    if before.info.status != "FINISHED" or before.data.tags.get("training_key") != training_key:
        return None   # that night failed after recording, or other parameters: this is not a rerun of it
    return (f"no new data: the newest value of {series.source} ({newest}) is no newer than the forecast origin "
            f"of the last successful night ({origin}, MLflow run {recorded_by}); nothing trained or registered")


@stage
def report_no_new_data(series: Panel, message: str, scored: Scored, model_name: str, run_id: str) -> RunSummary:
    """End the night without training: the MLflow run is tagged, a Prefect event is raised and the report says why."""
    run = Run(run_id)
    run.set_tags({"skipped": "no new data", "data_last_date": str(series.last.max())})
    alerts.emit("nnforecast.data.not-advanced", model_name,
                {"source": series.source, "newest": str(series.last.max()), "message": message}, run_id)
    say(message)
    lines = ["# Nightly forecast: no new data", "", message + ".", "", scored.realized.sentence()]
    if scored.png:
        lines += ["", f"![realized error]({report.inline_png(scored.png)})"]
    create_markdown_artifact(key="nightly-report", markdown="\n".join(lines), description="no new data")
    try:
        champion = run.client.get_model_version_by_alias(model_name, tracking.CHAMPION)
        version = str(champion.version)
    except MlflowException:
        version = ""
    return RunSummary(run_id, version, "no new data", np.nan, np.nan, Forecast.none(message))


@stage
def write_report(cfg: RunConfig, series: Panel, windows: Windows, result: TrainResult, evaluation: Evaluation,
                 forecast: Forecast, promotion: Promotion, pngs: dict[str, bytes], scored: Scored, run_id: str) -> None:
    """The run's markdown report in the Prefect UI (metrics table, registry decision, realized accuracy, small
    figures)."""
    figures = {**({"realized_error.png": scored.png} if scored.png else {}), **pngs}
    markdown = report.markdown_report(cfg, series, windows, result, evaluation, forecast,
                                      promotion.sentence(cfg.tracking.model_name) + "\n\n" + scored.realized.sentence(),
                                      figures, Run(run_id).url())
    create_markdown_artifact(key="nightly-report", markdown=markdown,
                             description=f"{cfg.model.model} test MAE {evaluation.model.mae:.3f}")


@stage
def report_unchanged(series: Panel, horizon: int, model_name: str, version, run_id: str) -> RunSummary:
    """Nothing to train: the registry already holds the model of this data and these parameters."""
    run = Run(run_id)
    metrics = run.client.get_run(version.run_id).data.metrics
    forecast = _published_forecast(run, version.run_id)
    if forecast is None:  # a version from before the forecasts table: its forecast_<k> metrics (one series)
        forecast = Forecast.of_one(next_dates(series.last[0], horizon, series.freq),
                                   np.array([metrics.get(f"forecast_{i + 1}", np.nan) for i in range(horizon)]))
    status = "champion" if version.aliases and tracking.CHAMPION in version.aliases else "unchanged"
    run.set_tags({"skipped": "unchanged data and parameters", "model_version": version.version, "model_role": status})
    message = (f"unchanged: {model_name} v{version.version} (MLflow run {version.run_id}) was trained on this "
               f"data (sha256 {series.sha256[:12]}…) with these parameters; no new version")
    say(message)
    create_markdown_artifact(key="nightly-report", markdown=f"# Nightly forecast: nothing new\n\n{message}.",
                             description="unchanged data and parameters")
    return RunSummary(run_id, str(version.version), status, metrics.get("test_mae", np.nan),
                      metrics.get("naive_test_mae", np.nan), forecast)


def _published_forecast(run: Run, source_run: str) -> Forecast | None:
    """The forecasts table an earlier run logged, if it did."""
    if not any(a.path == "forecasts.csv" for a in run.client.list_artifacts(source_run)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        t = pd.read_csv(run.client.download_artifacts(source_run, "forecasts.csv", tmp), dtype={"unique_id": str})
    ds = pd.to_datetime(t["ds"]).to_numpy().astype("datetime64[s]")
    return Forecast(t["unique_id"].to_numpy(dtype=object), compact_times(ds), t["step"].to_numpy(),
                    t["yhat"].to_numpy(dtype=np.float64))
