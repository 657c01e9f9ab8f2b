"""The nightly pipeline: open_forecast_ledger → load_series → score_forecasts → check_data_advanced (no new data:
report_no_new_data, the end) → make_windows → train_model → evaluate_model → log_results → champion_forecast →
publish_model → record_forecasts → write_report.

Run once: ``python -m flows.nightly [--preset notebook] [--model lstm] …`` (``--help`` lists every
parameter). Deployed on a schedule by ``prefect.yaml``.
"""
from __future__ import annotations

import sys

from flows.runtime import env  # noqa: F401  (environment defaults before prefect/mlflow import)
from flows.runtime import server

if __name__ == "__main__":  # the CLI boots Prefect's temporary server while it imports the rest
    server.start_early(sys.argv[1:])

import argparse
import os
from typing import Any

from prefect import flow, unmapped
from prefect.states import Completed
from prefect.runtime import flow_run as current_flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows import cli
from flows.core import ingest
from flows.core.config import ConfigError, RunConfig
from flows.core.sources import DataError
from flows.runtime import alerts, tracking
from flows.tasks import (RunSummary, champion_forecast, check_data_advanced, combine_series_models, evaluate_model,
                         load_series, log_results, make_windows, open_forecast_ledger, publish_model,
                         record_forecasts, report_no_new_data, report_unchanged, score_forecasts, show_config,
                         train_model, train_series, write_report)


#: Concurrent tasks (the --per-series trainings) in threads: one per core. Prefect's default is unbounded, and
#: 148 threads training at once crashed OpenBLAS ("precompiled NUM_THREADS exceeded", then a segfault).
TASK_THREADS = os.cpu_count() or 1


@flow(name="nightly", log_prints=False, task_runner=ThreadPoolTaskRunner(max_workers=TASK_THREADS),
      on_failure=[alerts.on_failure])
def nightly(preset: str | None = None, overrides: dict[str, Any] | None = None) -> RunSummary:
    """Retrain the forecaster on the latest data, evaluate it against baselines, publish the forecast.

    Args:
        preset: a named preset (e.g. ``notebook``) applied before the overrides.
        overrides: parameter name → value (any flag of ``python -m flows.nightly --help``, with
            underscores: ``{"model": "lstm", "hidden_size": 32}``); the rest are the preset's or the defaults.
    """
    cfg = RunConfig.resolve(preset, overrides)
    show_config(cfg)
    name = current_flow_run.name
    tags = {"training_key": cfg.training_key(), "prefect_flow_run": name or "",
            "prefect_flow_run_id": current_flow_run.id or ""}
    open_forecast_ledger(cfg.tracking.ledger_url)   # an unreachable ledger fails the night before any work
    with tracking.run(cfg.tracking.experiment, name, tags, params=cfg.public()) as run:
        series = load_series(cfg.data, cfg.windows.positive_only, run.id)
        scored = score_forecasts(series, cfg.tracking.ledger_url, cfg.tracking.model_name, cfg.tracking.score_nights,
                                 run.id)
        nothing_new = check_data_advanced(series, cfg.data, cfg.tracking.ledger_url, cfg.tracking.model_name,
                                          cfg.training_key(), run.id)
        if nothing_new:
            summary = report_no_new_data(series, nothing_new, scored, cfg.tracking.model_name, run.id)
            return Completed(message=nothing_new, data=summary)
        run_key = tracking.run_key(series.sha256, cfg.training_key())
        done = tracking.find_version(cfg.tracking.model_name, run_key)
        if done is not None and not cfg.tracking.resume:  # a rerun of a night: same data, same parameters
            return report_unchanged(series, cfg.windows.horizon, cfg.tracking.model_name, done, run.id)
        windows = make_windows(series, cfg.data, cfg.windows, cfg.model.dtype)
        if cfg.model.per_series:   # one network per series: mapped tasks, on the flow's task runner
            results = train_series.map([windows.only(s) for s in range(windows.n_series)],
                                       [str(i) for i in windows.ids], unmapped(cfg.model), unmapped(cfg.training))
            result = combine_series_models(results, windows, run.id)
        else:
            result = train_model(windows, cfg.model, cfg.training, cfg.tracking, cfg.training_key(), run.id)
        evaluation, forecast = evaluate_model(result, windows, cfg.data.stat_baselines)
        pngs = log_results(series, windows, result, evaluation, forecast, run.id, cfg.tracking.figures)
        key = tracking.forecast_key(cfg.public())
        held = champion_forecast(windows, forecast, cfg.tracking.model_name, key)   # before the alias may move
        promotion = publish_model(series, windows, result, evaluation, cfg.tracking.model_name, run_key, key, run.id,
                                  scored.realized.verdict)
        record_forecasts(windows, forecast, cfg.tracking.ledger_url, cfg.tracking.model_name, promotion.version,
                         run.id, held)
        write_report(cfg, series, windows, result, evaluation, forecast, promotion, pngs, scored, run.id)
    return RunSummary(run.id, promotion.version, promotion.status, evaluation.model.mae, evaluation.naive.mae,
                      forecast, promotion.previous_version)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.nightly",
        description="Run the nightly forecasting pipeline once (Prefect flow, tracked in MLflow).",
        epilog="Explicit flags override the preset's values; 0 switches an optional parameter off.")
    cli.add_config_arguments(p)
    p.add_argument("--dask", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the flow's tasks (the --per-series trainings) on Dask: the scheduler at ADDRESS (or "
                        "$DASK_SCHEDULER_ADDRESS), else a local cluster of one worker process per core")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cli.console_logging()
    overrides = cli.overrides_from(args)
    try:
        cfg = RunConfig.resolve(args.preset, overrides)  # reject bad parameters before starting anything
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not cfg.data.source.startswith(("http://", "https://")):  # a URL is read once, by the flow's retried task
        try:  # bad data is reported now, while the Prefect server boots, not after it
            ingest.load_series(cfg.data, cfg.windows.positive_only)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    try:
        tracking.client()  # open the MLflow store (~2 s with sqlite) while the Prefect server boots
        server.wait_ready()  # the temporary server started by the CLI, if any
        flow_fn = nightly
        if args.dask is not None:
            from flows.runtime.cluster import dask_runner
            flow_fn = nightly.with_options(task_runner=dask_runner(args.dask or None))
        summary = cli.run_flow(flow_fn, {"preset": args.preset, "overrides": overrides})
    except Exception as e:  # noqa: BLE001 - the flow run already recorded the traceback
        print(f"error: the nightly flow failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if summary.status == "no new data":
        print(f"done: {summary.forecast.note}; MLflow run {summary.run_id}")
        return 0
    print(f"done: test MAE {summary.test_mae:.3f} vs naive {summary.naive_test_mae:.3f}; "
          f"model v{summary.version} is {summary.status}; MLflow run {summary.run_id}")
    if summary.forecast.note:
        print(f"no forecast: {summary.forecast.note}")
        return 0
    ids = list(dict.fromkeys(summary.forecast.unique_id))
    for d, v in summary.forecast.rows()[:summary.forecast.step.max()]:
        print(f"forecast {d}: {v:.2f}{f'  ({ids[0]})' if len(ids) > 1 else ''}")
    if len(ids) > 1:
        print(f"… and {len(ids) - 1} more series: forecasts.csv in the MLflow run")
    return 0


if __name__ == "__main__":
    cli.exit_fast(main())
