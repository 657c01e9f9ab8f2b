"""Training: Adam (or SGD) on full or shuffled mini-batches, clipping, best-validation weights, early stop.

Pure function of (windows, model spec, training spec); the Prefect task wraps it and forwards the
per-epoch metrics to MLflow through ``on_epoch`` and the checkpoints (every ``checkpoint_every``
epochs, see :mod:`flows.core.checkpoint`) through ``on_checkpoint``; ``resume`` continues from one;
``init`` starts from given weights (a warm start from the champion's, see
:func:`flows.core.model_io.warm_start_weights`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nncore import OPTIMIZERS, Regularization, build_model, clip_grad_norm, get_loss

from .checkpoint import Checkpoint
from .composite import Ensemble
from .config import ModelSpec, TrainSpec
from .windowing import Windows

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; the message names the epoch."""


@dataclass
class TrainResult:
    model: object
    best_epoch: int                  # 1-based epoch whose weights were kept
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    seconds: float
    weights_sha256: str
    backend: str
    history: dict[str, list[float]] = field(default_factory=dict)


def weights_hash(model) -> str:
    """SHA-256 over the parameters in key order: equal weights ⇔ equal hash."""
    h = hashlib.sha256()
    for key in sorted(model.params):
        p = np.ascontiguousarray(model.params[key])
        h.update(key.encode())
        h.update(str(p.dtype).encode())
        h.update(p.tobytes())
    return h.hexdigest()


def model_backend(model) -> str:
    """The recurrent kernel a model runs on ('numpy' or 'cython'); 'numpy' for the MLP."""
    rnn = getattr(model, "rnn", None)
    return getattr(rnn, "backend", "numpy")


def build(spec: ModelSpec, windows: Windows, rng: np.random.Generator):
    """A fresh model of ``spec`` for windows of this length, channels (the target and its covariates), horizon and
    known-in-advance inputs."""
    future = windows.train.future
    return build_model(spec.model, hidden_size=spec.hidden_size, window=windows.window,
                       input_size=windows.train.X.shape[2], output_size=windows.horizon,
                       future_size=0 if future is None else future.shape[1], dtype=spec.dtype, rng=rng,
                       backend=spec.backend)


def evaluate_loss(model, X: np.ndarray, y: np.ndarray, loss_name: str, batch: int = 8192,
                  future: np.ndarray | None = None) -> float:
    loss_fn = get_loss(loss_name)
    run = getattr(model, "predict", model.forward)  # the inference kernels; forward for a model without them
    total = 0.0
    for lo in range(0, len(X), batch):
        pred, _ = run(X[lo:lo + batch], future=None if future is None else future[lo:lo + batch])
        total += loss_fn(pred, y[lo:lo + batch])[0] * len(pred)
    return total / len(X)


def train(windows: Windows, model_spec: ModelSpec, spec: TrainSpec,
          on_epoch: Callable[[int, dict], None] | None = None,
          on_checkpoint: Callable[[Checkpoint], None] | None = None, resume: Checkpoint | None = None, *,
          init: dict[str, np.ndarray] | None = None) -> TrainResult:
    """Train a model of ``model_spec`` on ``windows.train``, keeping the best validation epoch; with
    ``spec.ensemble`` N > 1, N networks from seeds ``seed … seed+N−1`` one after another, as one
    :class:`~flows.core.composite.Ensemble` (``on_epoch`` sees the first member's epochs; no checkpoints).

    ``init``: the weights to start from (see :func:`train_one`); for an ensemble, the ensemble's state dict,
    each member starting from its own ``m<k>/…`` entries.
    """
    _check_start(resume, init)
    if spec.ensemble > 1:
        if resume is not None:
            raise ValueError("an ensemble is not checkpointed: it cannot resume")
        members = [train_one(windows, model_spec, dataclasses.replace(spec, seed=spec.seed + k, ensemble=1),
                             on_epoch if k == 0 else None, init=None if init is None else _member(init, k))
                   for k in range(spec.ensemble)]
        return combine(members, Ensemble([m.model for m in members]))
    return train_one(windows, model_spec, spec, on_epoch, on_checkpoint, resume, init=init)


def _check_start(resume: Checkpoint | None, init: dict | None) -> None:
    if resume is not None and init is not None:
        raise ValueError("resume (continue a checkpoint) and init (start from given weights) exclude each other: "
                         "pass one of them")


def _member(weights: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Ensemble member ``k``'s parameters out of the ensemble's state dict (keys ``m<k>/<name>`` → ``<name>``)."""
    prefix = f"{Ensemble.KEY}{k}/"
    return {name[len(prefix):]: v for name, v in weights.items() if name.startswith(prefix)}


def combine(results: list[TrainResult], model) -> TrainResult:
    """Several trainings as one result for ``model`` (their networks together): epochs and seconds summed, the
    median best epoch, the mean validation loss, loss curves averaged over the trainings still running at each
    epoch, one hash over every network's weights (in order)."""
    h = hashlib.sha256()
    for r in results:
        h.update(bytes.fromhex(r.weights_sha256))
    longest = max(len(r.history.get("train_loss", [])) for r in results)
    history = {}
    for key in ("train_loss", "val_loss"):
        curves = np.full((len(results), longest), np.nan)
        for i, r in enumerate(results):
            curve = r.history.get(key, [])
            curves[i, :len(curve)] = curve
        history[key] = [float(np.nanmean(c)) for c in curves.T]
    return TrainResult(model=model, best_epoch=int(np.median([r.best_epoch for r in results])),
                       best_val_loss=float(np.mean([r.best_val_loss for r in results])),
                       epochs_run=int(sum(r.epochs_run for r in results)),
                       stopped_early=all(r.stopped_early for r in results),
                       seconds=float(sum(r.seconds for r in results)), weights_sha256=h.hexdigest(),
                       backend=results[0].backend, history=history)


def train_one(windows: Windows, model_spec: ModelSpec, spec: TrainSpec,
              on_epoch: Callable[[int, dict], None] | None = None,
              on_checkpoint: Callable[[Checkpoint], None] | None = None,
              resume: Checkpoint | None = None, *, init: dict[str, np.ndarray] | None = None) -> TrainResult:
    """Train one network of ``model_spec`` on ``windows.train``, keeping the best validation epoch.

    ``on_checkpoint(ckpt)`` is called every ``spec.checkpoint_every`` epochs with the state that
    ``resume=ckpt`` continues from (same weights at the end as without the interruption).
    ``init``: a state dict of this architecture (e.g. the champion's) to start from instead of the seed's
    random weights; the seed still draws them first, so the shuffling is the same as without ``init``.
    Raises :class:`TrainingDiverged` naming the epoch when the training loss, the gradient norm
    or the validation loss becomes non-finite.
    """
    _check_start(resume, init)
    rng = np.random.default_rng(spec.seed)
    model = build(model_spec, windows, rng)
    if init is not None:
        model.load_state_dict(init)
    opt = OPTIMIZERS[spec.optimizer](model, lr=spec.lr)
    reg = Regularization(l1=spec.l1, l2=spec.l2) if (spec.l1 or spec.l2) else None
    X, y = windows.train.X, windows.train.y
    n = len(X)
    batch = n if spec.batch_size is None else min(spec.batch_size, n)
    history: dict[str, list[float]] = {k: [] for k in ("train_loss", "val_loss", "grad_norm", "saturation",
                                                       "epoch_seconds")}
    best = (math.inf, 0, model.state_dict())
    since_best = 0
    stopped_early = False
    first_epoch, elapsed_before = 1, 0.0
    if resume is not None:
        model.load_state_dict(resume.model)
        opt.load_state_dict(resume.optimizer)
        rng.bit_generator.state = resume.rng
        best = (resume.best_val_loss, resume.best_epoch, resume.best_model)
        since_best = resume.since_best
        history = {k: list(v) for k, v in resume.history.items()}
        first_epoch, elapsed_before = resume.epoch + 1, resume.elapsed
        log.info("resuming after epoch %d", resume.epoch)
    t_start = time.perf_counter()
    epoch = first_epoch - 1
    for epoch in range(first_epoch, spec.epochs + 1):
        t0 = time.perf_counter()
        order = np.arange(n) if batch == n else rng.permutation(n)
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                train_loss, norms, state = _run_epoch(model, opt, reg, X, y, order, batch, spec, epoch,
                                                      windows.train.future)
                val_loss = evaluate_loss(model, windows.val.X, windows.val.y, spec.loss, future=windows.val.future)
        except FloatingPointError as e:  # overflow or invalid value inside NumPy: the same failure, earlier
            raise TrainingDiverged(f"training diverged at epoch {epoch}: {e} (lr {spec.lr}; try a smaller --lr "
                                   f"or --grad-clip)") from None
        train_loss /= n
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"training diverged at epoch {epoch}: validation loss {val_loss}")
        metrics = {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "grad_norm": float(np.mean(norms)),
            "saturation": model.saturation(state),
            "epoch_seconds": time.perf_counter() - t0,
        }
        for k, v in metrics.items():
            history[k].append(v)
        if val_loss < best[0]:
            best = (val_loss, epoch, model.state_dict())
            since_best = 0
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if spec.patience is not None and since_best >= spec.patience:
            stopped_early = True
            break
        if on_checkpoint is not None and spec.checkpoint_every and epoch % spec.checkpoint_every == 0 \
                and epoch < spec.epochs:
            on_checkpoint(Checkpoint(epoch=epoch, model=model.state_dict(), optimizer=opt.state_dict(),
                                     rng=rng.bit_generator.state, best_val_loss=best[0], best_epoch=best[1],
                                     best_model=best[2], since_best=since_best, history=history,
                                     elapsed=elapsed_before + time.perf_counter() - t_start))
    model.load_state_dict(best[2])
    return TrainResult(model=model, best_epoch=best[1], best_val_loss=best[0], epochs_run=epoch,
                       stopped_early=stopped_early, seconds=elapsed_before + time.perf_counter() - t_start,
                       weights_sha256=weights_hash(model), backend=model_backend(model), history=history)


def _run_epoch(model, opt, reg, X, y, order, batch, spec: TrainSpec, epoch, future=None):
    """One pass over the training windows (``future``: their known-in-advance inputs, or None).

    Returns (summed loss, gradient norms before clipping, the last batch's final state).
    """
    n = len(X)
    train_loss = 0.0
    norms = []
    for lo in range(0, n, batch):
        idx = order[lo:lo + batch]
        xb, yb = (X, y) if batch == n else (X[idx], y[idx])
        fb = None if future is None else (future if batch == n else future[idx])
        opt.zero_grad()
        loss, state = model.loss_and_grad(xb, yb, spec.loss, future=fb)
        if reg is not None:
            loss += reg(model, xb, fb)
        norm = clip_grad_norm(model, spec.grad_clip) if spec.grad_clip else _grad_norm(model)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise TrainingDiverged(f"training diverged at epoch {epoch}: loss {loss}, gradient norm {norm} "
                                   f"(lr {spec.lr}; try a smaller --lr or --grad-clip)")
        opt.step()
        train_loss += loss * len(idx)
        norms.append(norm)
    return train_loss, norms, state


def _grad_norm(model) -> float:
    return math.sqrt(sum(float(np.vdot(g, g)) for g in model.grads.values()))
