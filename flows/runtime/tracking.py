"""MLflow: runs and their lifecycle, parameters, per-epoch metrics, checkpoints, the pyfunc model, the champion alias
(and its weights, to start the next training from).

With no ``MLFLOW_TRACKING_URI`` the store is ``sqlite:///<project>/mlflow.db``; a sqlite store keeps
its artifacts beside the database file (``<db dir>/mlartifacts/<experiment>``); with a tracking
server, the server decides where artifacts go.

One run lifecycle for every flow: ``with tracking.run(experiment, ...) as run:`` creates the run,
and ends it FINISHED when the block completes, FAILED when anything (an exception, an interrupt)
leaves it. A process killed outright leaves the run RUNNING with its last checkpoint, which is
what ``--resume`` looks for.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, Schema

from flows.core import checkpoint
from flows.core.checkpoint import Checkpoint, CheckpointError
from flows.core.files import PROJECT_ROOT, atomic_write
from flows.core.model_io import read_forecaster
from flows.core.sources import redact

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
CHECKPOINT_DIR = "checkpoints"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def unreachable(uri: str, timeout: float = 5.0) -> str | None:
    """Why this process cannot use the MLflow tracking store ``uri`` (None when it can): a SQLite file that is not
    here (a worker on another machine), or a tracking server that does not answer ``/health``."""
    shown = redact(uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():
            return (f"the MLflow store {shown} is not a file on this machine; workers on other machines need a "
                    "tracking server (MLFLOW_TRACKING_URI=http://host:5000)")
        return None
    if uri.startswith(("http://", "https://")):
        import urllib.request
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                return None
        except OSError as e:
            return f"the MLflow tracking server {shown} does not answer: {getattr(e, 'reason', e)}"
    return None


def client() -> MlflowClient:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(c: MlflowClient, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        # sqlite stores put artifacts in <cwd>/mlruns unless told otherwise: keep them beside the db
        db = Path(uri[len("sqlite:///"):]).resolve()
        artifact_location = (db.parent / "mlartifacts" / name).as_uri()
    try:
        return c.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created concurrently by another run
        return c.get_experiment_by_name(name).experiment_id


def code_version() -> str:
    """The git commit of the project (with '-dirty' for local changes), or the package version."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version
        try:
            return "nnforecast " + version("nnforecast")
        except PackageNotFoundError:
            return "unknown"


# ----------------------------------------------------------------------------------------------
# A run
# ----------------------------------------------------------------------------------------------
class Run:
    """One MLflow run, by id (a string travels to other processes; ``Run(id)`` there is the same run)."""

    def __init__(self, run_id: str):
        self.id = run_id
        self.client = client()

    def log_params(self, params: dict) -> None:
        """Every parameter as given, except a ``source`` URL's secrets (redacted)."""
        params = {k: redact(v) if k == "source" and isinstance(v, str) else v for k, v in params.items()}
        self.client.log_batch(self.id, params=[Param(k, str(v)) for k, v in sorted(params.items())])

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Finite values only (an undefined metric is left out rather than logged as nan)."""
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items() if v is not None and np.isfinite(v)]
        self.client.log_batch(self.id, metrics=batch)

    def log_history(self, metrics: dict[str, np.ndarray], steps: np.ndarray, times: np.ndarray) -> None:
        """Metrics with one value per step (e.g. per night: ``times`` its datetime64 timestamps), finite values only."""
        ms = pd.to_datetime(times).astype("int64") // 1_000_000
        batch = [Metric(k, float(v), int(t), int(s)) for k, values in metrics.items()
                 for v, s, t in zip(values, steps, ms) if np.isfinite(v)]
        for lo in range(0, len(batch), 1000):   # MLflow accepts at most 1000 metrics per batch
            self.client.log_batch(self.id, metrics=batch[lo:lo + 1000])

    def set_tags(self, tags: dict) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.id, k, str(v))

    def log_files(self, files: dict[str, bytes], artifact_path: str | None = None) -> None:
        """Artifacts from bytes: file name -> content."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                atomic_write(Path(tmp) / name, data)
            self.client.log_artifacts(self.id, tmp, artifact_path=artifact_path)

    def log_checkpoint(self, ckpt: Checkpoint, training_key: str) -> None:
        """The run's training checkpoint, replacing the previous one."""
        with tempfile.TemporaryDirectory() as tmp:
            path = checkpoint.save(ckpt, Path(tmp) / checkpoint.FILENAME, training_key)
            self.client.log_artifact(self.id, str(path), artifact_path=CHECKPOINT_DIR)

    def epoch_logger(self, seconds: float = 2.0) -> "EpochLogger":
        return EpochLogger(self, seconds)

    def url(self) -> str | None:
        """The MLflow UI page of the run when a tracking server is used (None for a local store)."""
        uri = tracking_uri()
        if not uri.startswith(("http://", "https://")):
            return None
        exp_id = self.client.get_run(self.id).info.experiment_id
        return f"{uri.rstrip('/')}/#/experiments/{exp_id}/runs/{self.id}"

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.id, status)


@contextlib.contextmanager
def run(experiment: str, name: str | None = None, tags: dict | None = None, params: dict | None = None,
        parent: str | None = None) -> Iterator[Run]:
    """A new run of ``experiment`` (nested under ``parent``), every parameter logged before any work;
    FINISHED when the block completes, FAILED when anything leaves it."""
    c = client()
    tags = {"code_version": code_version(), **(tags or {})}
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    r = Run(c.create_run(ensure_experiment(c, experiment), run_name=name, tags=tags).info.run_id)
    try:
        if params:
            r.log_params(params)
        yield r
    except BaseException:
        r.end("FAILED")
        raise
    r.end("FINISHED")


class EpochLogger:
    """Buffers per-epoch metrics and sends them with ``log_batch`` once ``seconds`` have passed since the last
    send (at the end of an epoch), so the MLflow UI follows the training live at a cost that does not grow with
    the epoch rate: a ``log_batch`` takes ~25 ms on a local store, a tenth of a 35 ms epoch when sent every
    10 epochs (measured, ``benchmarks/bench_epoch.py --profile``), ~1 % every 2 s."""

    def __init__(self, r: Run, seconds: float = 2.0):
        self.run, self.seconds = r, seconds
        self.buffer: list[Metric] = []
        self.sent = time.monotonic()

    def __call__(self, epoch: int, metrics: dict) -> None:
        ts = int(time.time() * 1000)
        self.buffer += [Metric(k, float(v), ts, epoch) for k, v in metrics.items() if np.isfinite(v)]
        if time.monotonic() - self.sent >= self.seconds:
            self.flush()

    def flush(self) -> None:
        for lo in range(0, len(self.buffer), 1000):  # MLflow accepts at most 1000 metrics per batch
            self.run.client.log_batch(self.run.id, metrics=self.buffer[lo:lo + 1000])
        self.buffer = []
        self.sent = time.monotonic()


# ----------------------------------------------------------------------------------------------
# Resuming an interrupted run
# ----------------------------------------------------------------------------------------------
def _has_checkpoint(c: MlflowClient, run_id: str) -> bool:
    return any(a.path.endswith(checkpoint.FILENAME) for a in c.list_artifacts(run_id, CHECKPOINT_DIR))


def resumable_run(experiment: str, resume: str, training_key: str) -> str:
    """The run ``resume`` names: a run id, or 'latest' (the newest unfinished run with this training key)."""
    c = client()
    if resume != "latest":
        try:
            c.get_run(resume)
        except MlflowException:
            raise ValueError(f"parameter resume={resume!r}: no such MLflow run") from None
        return resume
    exp = c.get_experiment_by_name(experiment)
    if exp is not None:
        runs = c.search_runs([exp.experiment_id], filter_string=f"tags.training_key = '{training_key}'",
                             order_by=["attributes.start_time DESC"], max_results=50)
        for r in runs:
            if r.info.status in ("RUNNING", "FAILED", "KILLED") and _has_checkpoint(c, r.info.run_id):
                return r.info.run_id
    raise ValueError(f"parameter resume='latest': no unfinished run with a checkpoint and the same training "
                     f"parameters in experiment {experiment!r}")


def load_checkpoint(run_id: str, training_key: str) -> Checkpoint:
    """The last checkpoint of ``run_id``; a clear error if it has none or other training parameters."""
    c = client()
    if not _has_checkpoint(c, run_id):
        raise CheckpointError(f"MLflow run {run_id} has no checkpoint to resume from")
    with tempfile.TemporaryDirectory() as tmp:
        path = c.download_artifacts(run_id, f"{CHECKPOINT_DIR}/{checkpoint.FILENAME}", tmp)
        return checkpoint.load(Path(path), training_key)


# ----------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------
#: the served model of a panel: recent history in, the forecasts table out (column-based)
PANEL_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "unique_id"), ColSpec("datetime", "ds"), ColSpec("double", "y")]),
    outputs=Schema([ColSpec("string", "unique_id"), ColSpec("datetime", "ds"), ColSpec("long", "step"),
                    ColSpec("double", "yhat")]))


#: MLflow loads a model-from-code (``python_model=<file>``) with a stand-in ``dbutils`` in ``sys.modules``
#: and puts the previous entry back afterwards: two threads at once (a backfill's concurrent nights) can
#: put back each other's stand-in for good, so one thread of a process logs a model at a time
_LOG_MODEL = threading.Lock()


def log_model(r: Run, model_dir: Path, example, prediction, model_name: str) -> str:
    """Log the pyfunc model (weights .npz + JSON config, no pickle) and register a new version; returns its number.

    ``example``: a window array (a model of one series) or recent history ``unique_id, ds, y`` (a panel)."""
    if hasattr(example, "columns"):   # a panel (and any model with covariates): its columns beyond unique_id, ds, y
        extra = [ColSpec("double", c) for c in example.columns if c not in ("unique_id", "ds", "y")]
        signature = ModelSignature(inputs=Schema([*PANEL_SIGNATURE.inputs.inputs, *extra]),
                                   outputs=PANEL_SIGNATURE.outputs)
    else:
        signature = infer_signature(example, prediction)
    client()
    with _LOG_MODEL, mlflow.start_run(run_id=r.id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(PROJECT_ROOT / "nncore"), str(PROJECT_ROOT / "flows")],
            signature=signature,
            input_example=example,
            pip_requirements=[f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"],
            registered_model_name=model_name,
        )
    return str(info.registered_model_version)


def run_key(data_sha256: str, training_key: str) -> str:
    """What a registered version was trained from: the data's checksum and the training parameters."""
    return hashlib.sha256(f"{data_sha256}:{training_key}".encode()).hexdigest()


def find_version(model_name: str, key: str):
    """The registered version of ``model_name`` tagged with ``run_key`` = ``key`` whose run finished, if any
    (a run that failed after registering, e.g. in its report, does not count as done)."""
    c = client()
    try:
        found = c.search_model_versions(f"name = '{model_name}' and tags.run_key = '{key}'")
    except MlflowException:
        return None
    done = [v for v in found if c.get_run(v.run_id).info.status == "FINISHED"]
    return min(done, key=lambda v: int(v.version)) if done else None


#: the parameters that say what a model forecasts; versions are compared only when these agree
FORECAST_PARAMS = ("source", "value_column", "id_column", "horizon")


def forecast_key(params: dict) -> str:
    """What a run forecasts (its source's series and how far ahead), from its parameters; a legacy run that
    did not log a parameter has its default."""
    defaults = {"id_column": None, "value_column": "y"}
    what = {k: str(params.get(k, defaults.get(k))) for k in FORECAST_PARAMS}
    return " · ".join(f"{k}={v}" for k, v in what.items())


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` decided for one version."""

    version: str
    status: str                        # "champion" | "challenger"
    previous_version: str | None       # the champion before, if any
    previous_score: float | None       # its test MASE
    note: str = ""                     # why the alias did not move, when that is not a score

    def sentence(self, model_name: str) -> str:
        prev = (f"v{self.previous_version} (test MASE {self.previous_score:.3f})" if self.previous_version
                and self.previous_score is not None else "none")
        return (f"**Registry:** `{model_name}` version {self.version} is the **{self.status}** "
                f"(previous champion: {prev}).{' ' + self.note if self.note else ''}")


def _champion(c: MlflowClient, model_name: str) -> tuple[str, float | None, str] | None:
    """(version, test MASE, forecast key) of the champion, if there is one."""
    try:
        mv = c.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    if "test_mase" in mv.tags and "forecast_key" in mv.tags:
        return str(mv.version), float(mv.tags["test_mase"]), mv.tags["forecast_key"]
    run = c.get_run(mv.run_id).data  # a version registered before versions were tagged: read its run
    return str(mv.version), run.metrics.get("test_mase"), forecast_key(run.params)


def champion_weights(model_name: str) -> tuple[str, dict, dict[str, np.ndarray]] | None:
    """The champion's version, saved config (``config.json``) and weights (``weights.npz``), to start from;
    None when ``model_name`` is not registered or has no champion.

    MLflow 3 stores a logged model's files apart from its run's artifacts (``models:/<name>/<version>``
    resolves to them); the forecaster directory :func:`log_model` hands over as the pyfunc artifact
    ``model_dir`` is copied to ``artifacts/<directory name>`` inside it, the path its MLmodel file records.
    """
    c = client()
    try:
        mv = c.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as e:   # no such registered model, or no champion alias: anything else is an error
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    uri = f"models:/{model_name}/{mv.version}"
    model_dir = mlflow.models.get_model_info(uri).flavors["python_function"]["artifacts"]["model_dir"]["path"]
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{model_dir}", dst_path=tmp)
        config, weights = read_forecaster(Path(local))
    return str(mv.version), config, weights


def promote(model_name: str, version: str, test_mase: float, key: str, verdict=None) -> Promotion:
    """Alias ``champion`` the new version if it beats the current champion on test MASE, else tag it challenger;
    with a realized ``verdict`` (:class:`flows.core.realized.Verdict`: enough nights with both the new versions'
    and the champion's forecasts scored), on realized accuracy instead: the new version becomes champion when the
    versions trained each night beat the champion held on the same targets.

    Only versions that forecast the same thing (``key``: :func:`forecast_key`) are compared, and on a
    scale-free score (the test MAE relative to the naive forecast's on the same points), so nights whose
    test blocks differ compare fairly. A champion that forecasts something else (another source under the
    same model name) is neither compared nor displaced: the new version is a challenger and the note says
    to register that source under its own name.

    Safe when runs finish at the same time (one MLflow store, several processes, no lock): each new
    version is tagged ``role=pending`` with its score first; every run then sets the alias to the
    best of {current champion, all pending versions of the same key, what settled runs told it} and
    re-reads until the alias is stable. Only then does it settle: it tells every version still pending
    where the alias converged (a tag ``rival_<version>`` on theirs), then tags its own version champion
    or challenger. The telling closes the one gap of re-reading: a run that read the store before a
    better version was pending may write the alias after that version settled and left the pending set;
    it was pending itself when that version settled, so its next read includes the better one. Whatever
    the interleaving, the alias ends on the best of them, as if the runs had finished one after another;
    a champion set by hand stays unless a newer version beats it.
    """
    c = client()
    c.set_model_version_tag(model_name, version, "forecast_key", key)
    c.set_model_version_tag(model_name, version, "test_mase", f"{test_mase:.6f}")
    c.set_model_version_tag(model_name, version, "role", "pending")
    previous = _champion(c, model_name)
    if previous is not None and previous[2] != key:
        c.set_model_version_tag(model_name, version, "role", CHALLENGER)
        return Promotion(str(version), CHALLENGER, previous[0], previous[1],
                         f"The champion v{previous[0]} forecasts other data ({previous[2]}; this run: {key}), so "
                         "they were not compared: give this source its own --model-name.")
    if verdict is not None and previous is not None:   # enough scored nights: realized accuracy decides
        status = CHAMPION if verdict.better() else CHALLENGER
        if verdict.better():
            c.set_registered_model_alias(model_name, CHAMPION, str(version))
        c.set_model_version_tag(model_name, version, "role", status)
        c.set_model_version_tag(model_name, version, "promoted_on", "realized accuracy")
        how = "promoted" if verdict.better() else "the champion stays"
        return Promotion(str(version), status, previous[0], previous[1],
                         f"Decided on realized accuracy ({how}): {verdict.sentence()}.")
    best = None
    for _ in range(20):
        champ = _champion(c, model_name)
        pending = c.search_model_versions(f"name = '{model_name}' and tags.role = 'pending'")
        pending = [v for v in pending if "test_mase" in v.tags and v.tags.get("forecast_key") == key]
        candidates = [(str(v.version), float(v.tags["test_mase"])) for v in pending]
        for v in pending:  # where the alias converged for runs that settled while this one was pending
            if str(v.version) == str(version):
                candidates += [(t.split(":")[0], float(t.split(":")[1]))
                               for k, t in v.tags.items() if k.startswith("rival_")]
        if champ is not None and champ[1] is not None and champ[2] == key:
            candidates.append(champ[:2])
        best = min(candidates, key=lambda vm: (vm[1], int(vm[0])))
        if champ is not None and champ[0] == best[0]:
            break  # stable: the alias already names the best
        try:
            c.set_registered_model_alias(model_name, CHAMPION, best[0])
        except MlflowException:  # another run set it at the same moment (sqlite: UNIQUE constraint): re-read
            time.sleep(random.uniform(0.05, 0.3))
    for v in pending:  # settle: tell the runs still pending where the alias converged
        if str(v.version) != str(version):
            c.set_model_version_tag(model_name, v.version, f"rival_{version}", f"{best[0]}:{best[1]!r}")
    status = CHAMPION if best[0] == str(version) else CHALLENGER
    c.set_model_version_tag(model_name, version, "role", status)
    return Promotion(str(version), status, previous[0] if previous else None, previous[1] if previous else None)
