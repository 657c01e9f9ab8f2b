"""The nightly pipeline: load_series → make_windows → train_model → evaluate_model → write_report.

Run once: ``python -m flows.nightly [--preset notebook] [--model lstm] …`` (``--help`` lists every
parameter). Deployed on a schedule by ``prefect.yaml``.
"""
from __future__ import annotations

import sys

from flows import _env  # noqa: F401  (environment defaults before prefect/mlflow import)
from flows import _server

if __name__ == "__main__":  # the CLI boots Prefect's temporary server while it imports the rest
    _server.start_early(sys.argv[1:])

import argparse
import gc
import logging
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run as current_flow_run

from flows import evaluation as ev
from flows import reporting, tracking
from flows.config import PRESETS, PipelineConfig, resolve_config
from flows.ingest import DataError, Series
from flows.ingest import load_series as _load_series
from flows.model_io import load_forecaster, save_forecaster
from flows.training import TrainResult, train
from flows.windowing import Windows
from flows.windowing import make_windows as _make_windows

log = logging.getLogger("nnforecast")


def _say(message: str) -> None:
    """Short progress line: to the console and, inside a run, to the Prefect UI."""
    log.info(message)
    try:
        get_run_logger().info(message)
    except MissingContextError:  # called outside a flow or task run (e.g. task.fn in a unit test)
        pass


# ----------------------------------------------------------------------------------------------
# Tasks: one per stage
# ----------------------------------------------------------------------------------------------
def _retry_io_only(task, task_run, state) -> bool:
    """Retry I/O failures; bad data (DataError) fails at once: reading it again cannot help."""
    return not isinstance(state.result(raise_on_failure=False), DataError)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_io_only)
def load_series(cfg: PipelineConfig, run_id: str) -> Series:
    """Read and validate the series (download once into the cache when needed)."""
    series = _load_series(cfg.source, cfg.date_column, cfg.value_column, cfg.max_gap_days,
                          positive=cfg.target == "return")
    tracking.set_tags(run_id, {"data_sha256": series.sha256, "data_source": series.source,
                               "data_last_date": str(series.dates[-1]), "data_rows": len(series)})
    _say(f"loaded {len(series)} values of {series.source} ({series.dates[0]} … {series.dates[-1]})")
    return series


@task
def make_windows(cfg: PipelineConfig, series: Series) -> Windows:
    """Cut the series into scaled windows and chronological train/validation/test parts."""
    values = series.tail(cfg.n_values).values
    windows = _make_windows(values, cfg.window, cfg.horizon, cfg.test_size, cfg.train_size, cfg.val_fraction,
                            cfg.target, np.dtype(cfg.dtype))
    _say(f"windows: {len(windows.train)} train / {len(windows.val)} validation / {len(windows.test)} test")
    return windows


@task
def train_model(cfg: PipelineConfig, windows: Windows, run_id: str) -> TrainResult:
    """Train, keep the best validation epoch; per-epoch metrics and checkpoints go to MLflow.

    With ``cfg.resume`` the training continues from the named run's last checkpoint (the
    interrupted run is marked KILLED); the result is the weights an uninterrupted run would have.
    """
    epoch_logger = tracking.EpochLogger(run_id)
    resume = None
    if cfg.resume:
        source_run = tracking.resumable_run(cfg)
        resume = tracking.load_checkpoint(source_run, cfg.training_key())
        tracking.set_tags(run_id, {"resumed_from": source_run, "resumed_after_epoch": resume["epoch"]})
        if source_run != run_id:
            tracking.end_run(source_run, "KILLED")
        _say(f"resuming run {source_run} after epoch {resume['epoch']}")

    def on_epoch(epoch: int, m: dict) -> None:
        epoch_logger(epoch, m)
        if epoch % cfg.log_every == 0 or epoch == 1 or epoch == cfg.epochs:
            _say(f"epoch {epoch:4d}/{cfg.epochs}  train {m['train_loss']:.3e}  val {m['val_loss']:.3e}  "
                 f"grad {m['grad_norm']:.2e}  {m['epoch_seconds'] * 1000:.0f} ms")

    def on_checkpoint(ckpt: dict) -> None:
        epoch_logger.flush()  # the metrics up to the checkpoint are in MLflow before it is
        tracking.log_checkpoint(run_id, ckpt)
        _say(f"checkpoint after epoch {ckpt['epoch']}")

    try:
        result = train(cfg, windows, on_epoch, on_checkpoint=on_checkpoint, resume=resume)
    finally:
        epoch_logger.flush()
    tracking.set_tags(run_id, {"kernel_backend": result.backend, "weights_sha256": result.weights_sha256})
    tracking.log_metrics(run_id, {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                                  "train_seconds": result.seconds, "epochs_run": result.epochs_run})
    _say(f"trained {result.epochs_run} epochs in {result.seconds:.1f} s on {result.backend}; "
         f"best validation epoch {result.best_epoch}")
    return result


@task
def evaluate_model(cfg: PipelineConfig, series: Series, windows: Windows, result: TrainResult) -> dict:
    """Test metrics (stateless and carried state) against naive and drift, and the next forecast."""
    evaluation = ev.evaluate(result.model, windows)
    values = series.tail(cfg.n_values).values
    next_values = ev.forecast_next(result.model, windows, values, np.dtype(cfg.dtype))
    next_dates = np.busday_offset(series.dates[-1], np.arange(1, cfg.horizon + 1), roll="forward")
    evaluation["forecast"] = {"dates": [str(d) for d in next_dates], "values": [float(v) for v in next_values]}
    m, n = evaluation["model"], evaluation["naive"]
    _say(f"test MAE {m['mae']:.3f} (carried {evaluation['carried']['mae']:.3f}) vs naive {n['mae']:.3f}: "
         f"MASE {m['mase']:.3f}")
    return evaluation


@task
def write_report(cfg: PipelineConfig, series: Series, windows: Windows, result: TrainResult,
                 evaluation: dict, run_id: str) -> dict:
    """Metrics, figures and the model to MLflow; register and maybe promote; the Prefect report."""
    final = {}
    for prefix, key in (("test_", "model"), ("carried_test_", "carried"), ("naive_test_", "naive"),
                        ("drift_test_", "drift")):
        final.update({prefix + k: v for k, v in evaluation[key].items()})
    final.update({f"forecast_{i + 1}": v for i, v in enumerate(evaluation["forecast"]["values"])})
    tracking.log_metrics(run_id, final)

    figures = reporting.make_figures(series, windows, evaluation, result.history, result.best_epoch)
    c = tracking.client()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pngs = reporting.render_png(figures)
            (Path(tmp) / "figures").mkdir()
            for name, png in pngs.items():
                (Path(tmp) / "figures" / name).write_bytes(png)
            c.log_artifacts(run_id, str(Path(tmp) / "figures"), artifact_path="figures")
            fc = Path(tmp) / "forecast.csv"
            fc.write_text("date,forecast\n" + "".join(
                f"{d},{v}\n" for d, v in zip(evaluation["forecast"]["dates"], evaluation["forecast"]["values"])))
            c.log_artifact(run_id, str(fc))
            model_dir = save_forecaster(result.model, windows, Path(tmp) / "model",
                                        {"data_sha256": series.sha256, "weights_sha256": result.weights_sha256})
            example = windows.values[-cfg.window:][None, :]
            prediction = load_forecaster(model_dir).predict(example)
            version = tracking.log_model(run_id, model_dir, example, prediction, cfg.model_name)
        c.set_model_version_tag(cfg.model_name, version, "run_key", tracking.run_key(series.sha256, cfg))
        promotion = tracking.promote(cfg.model_name, version, evaluation["model"]["mae"])
        promotion["version"] = version
        tracking.set_tags(run_id, {"model_version": version, "model_role": promotion["status"]})
        markdown = reporting.markdown_report(cfg, series, windows, result, evaluation, evaluation["forecast"],
                                             promotion, pngs, tracking.run_url(run_id))
    finally:
        reporting.close_figures(figures)
    create_markdown_artifact(key="nightly-report", markdown=markdown,
                             description=f"{cfg.model} test MAE {evaluation['model']['mae']:.3f}")
    _say(f"registered {cfg.model_name} v{version}: {promotion['status']}")
    return {"run_id": run_id, "version": version, **promotion}


def _unchanged(cfg: PipelineConfig, series: Series, version, run_id: str) -> dict:
    """Nothing to train: the registry already holds the model of this data and these parameters."""
    metrics = tracking.client().get_run(version.run_id).data.metrics
    dates = np.busday_offset(series.dates[-1], np.arange(1, cfg.horizon + 1), roll="forward")
    forecast = {"dates": [str(d) for d in dates], "values": [metrics.get(f"forecast_{i + 1}", float("nan"))
                                                             for i in range(cfg.horizon)]}
    status = "champion" if version.aliases and "champion" in version.aliases else "unchanged"
    tracking.set_tags(run_id, {"skipped": "unchanged data and parameters", "model_version": version.version,
                               "model_role": status})
    message = (f"unchanged: {cfg.model_name} v{version.version} (MLflow run {version.run_id}) was trained on this "
               f"data (sha256 {series.sha256[:12]}…) with these parameters; no new version")
    _say(message)
    create_markdown_artifact(key="nightly-report", markdown=f"# Nightly forecast: nothing new\n\n{message}.",
                             description="unchanged data and parameters")
    return {"run_id": run_id, "version": str(version.version), "status": status, "previous_version": None,
            "previous_test_mae": None, "test_mae": metrics.get("test_mae", float("nan")),
            "naive_test_mae": metrics.get("naive_test_mae", float("nan")), "forecast": forecast}


# ----------------------------------------------------------------------------------------------
# The flow: wiring only
# ----------------------------------------------------------------------------------------------
@flow(name="nightly", log_prints=False)
def nightly(
    preset: str | None = None, source: str | None = None, date_column: str | None = None,
    value_column: str | None = None, max_gap_days: int | None = None, n_values: int | None = None,
    window: int | None = None, horizon: int | None = None, test_size: int | None = None,
    train_size: int | None = None, val_fraction: float | None = None, target: str | None = None,
    model: str | None = None, hidden_size: int | None = None, dtype: str | None = None,
    backend: str | None = None, epochs: int | None = None, lr: float | None = None,
    batch_size: int | None = None, grad_clip: float | None = None, patience: int | None = None,
    loss: str | None = None, l1: float | None = None, l2: float | None = None, seed: int | None = None,
    log_every: int | None = None, experiment: str | None = None, model_name: str | None = None,
    optimizer: str | None = None, checkpoint_every: int | None = None, resume: str | None = None,
) -> dict:
    """Retrain the forecaster on the latest data, evaluate it against baselines, publish the forecast.

    Every parameter left as None takes the preset's value, else the default (see ``--help``).
    """
    overrides = {k: v for k, v in locals().items() if k != "preset"}
    cfg = resolve_config(preset, **overrides)
    run_name = current_flow_run.name
    run_id = tracking.start_run(cfg, run_name=run_name,
                                tags={"prefect_flow_run": run_name or "", "prefect_flow_run_id": current_flow_run.id or ""})
    try:
        series = load_series(cfg, run_id)
        done = tracking.find_version(cfg.model_name, tracking.run_key(series.sha256, cfg))
        if done is not None and not cfg.resume:  # a rerun of a night: same data, same parameters
            summary = _unchanged(cfg, series, done, run_id)
            tracking.end_run(run_id, "FINISHED")
            return summary
        windows = make_windows(cfg, series)
        result = train_model(cfg, windows, run_id)
        evaluation = evaluate_model(cfg, series, windows, result)
        summary = write_report(cfg, series, windows, result, evaluation, run_id)
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    return {**summary, "test_mae": evaluation["model"]["mae"], "naive_test_mae": evaluation["naive"]["mae"],
            "forecast": evaluation["forecast"]}


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.nightly",
        description="Run the nightly forecasting pipeline once (Prefect flow, tracked in MLflow).",
        epilog=f"Presets: {', '.join(PRESETS)}. Explicit flags override preset values.",
    )
    for f in fields(PipelineConfig):
        typ = {"int | None": int, "float | None": float, "str | None": str}.get(str(f.type), None)
        typ = typ or {"int": int, "float": float, "str": str}.get(str(f.type), str)
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typ, default=argparse.SUPPRESS,
                       help=f"{f.metadata.get('help', '')} (default: {f.default})")
    return p


def _console_logging() -> None:
    """Short progress lines on the console; MLflow's INFO chatter stays out of it."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def _run_flow(flow_fn, args: dict):
    """Call the flow; on the CLI's own temporary server, without run heartbeats.

    Heartbeats let a server mark a crashed run; a temporary server ends with this process, so
    there is nothing to mark, and the heartbeat thread costs ~1 s to join at the end.
    """
    if not _server.started():
        return flow_fn(**args)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return flow_fn(**args)


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    _console_logging()
    try:
        resolve_config(**args)  # reject bad parameters before starting anything
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        tracking.client()  # open the MLflow store (~2 s with sqlite) while the Prefect server boots
        _server.wait_ready()  # the temporary server started by the CLI, if any
        summary = _run_flow(nightly, args)
    except Exception as e:  # noqa: BLE001 - the flow run already recorded the traceback
        print(f"error: the nightly flow failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"done: test MAE {summary['test_mae']:.3f} vs naive {summary['naive_test_mae']:.3f}; "
          f"model v{summary['version']} is {summary['status']}; MLflow run {summary['run_id']}")
    for d, v in zip(summary["forecast"]["dates"], summary["forecast"]["values"]):
        print(f"forecast {d}: {v:.2f}")
    return 0


if __name__ == "__main__":
    code = main()
    # The interpreter's final garbage collection walks every object Prefect, MLflow and pyarrow
    # allocated: 2 s at exit. Frozen objects are skipped (refcounting still frees memory).
    gc.freeze()
    sys.exit(code)
