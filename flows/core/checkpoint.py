"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A :class:`Checkpoint` holds the epoch just finished, the model's parameters, the optimizer's state
(Adam's moments and step count, or SGD's buffers), the random generator's state, the best
validation epoch so far with its weights, the epochs since the best, and the per-epoch history.
Training resumed from it (``flows.core.training.train(resume=...)``) ends with the same weights,
bit for bit, as a run that was never interrupted (same data, configuration and thread count).

Stored as one ``.npz`` (no pickle: arrays under ``model/``, ``best/``, ``opt/<slot>/`` keys, the
scalars and the training key as a JSON string), written atomically.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_write

FILENAME = "checkpoint.npz"
_SCALARS = ("epoch", "best_epoch", "best_val_loss", "since_best", "history", "rng", "elapsed")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or made by different training parameters."""


@dataclass
class Checkpoint:
    epoch: int                          # the last epoch finished
    model: dict[str, np.ndarray]        # parameters after it
    optimizer: dict                     # the optimizer's state_dict()
    rng: dict                           # the generator's bit_generator.state
    best_val_loss: float
    best_epoch: int
    best_model: dict[str, np.ndarray]   # parameters of the best epoch so far
    since_best: int
    history: dict[str, list[float]]
    elapsed: float                      # training seconds so far


def save(ckpt: Checkpoint, path: Path, training_key: str) -> Path:
    """Write ``ckpt`` atomically to ``path``, stamped with the training parameters' key."""
    arrays: dict[str, np.ndarray] = {}
    arrays.update({f"model/{k}": a for k, a in ckpt.model.items()})
    arrays.update({f"best/{k}": a for k, a in ckpt.best_model.items()})
    opt_scalars, opt_dicts = {}, []
    for slot, value in ckpt.optimizer.items():
        if isinstance(value, dict):
            opt_dicts.append(slot)
            arrays.update({f"opt/{slot}/{k}": a for k, a in value.items()})
        else:
            opt_scalars[slot] = value
    meta = {k: getattr(ckpt, k) for k in _SCALARS}
    meta.update(training_key=training_key, optimizer=opt_scalars, optimizer_dicts=opt_dicts)
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(path, buf.getvalue())


def load(path: Path, training_key: str | None = None) -> Checkpoint:
    """Read a checkpoint; with ``training_key``, refuse one made by other training parameters."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            model, best = {}, {}
            optimizer = {**meta["optimizer"], **{slot: {} for slot in meta["optimizer_dicts"]}}
            for name in z.files:
                if name.startswith("model/"):
                    model[name[6:]] = z[name]
                elif name.startswith("best/"):
                    best[name[5:]] = z[name]
                elif name.startswith("opt/"):
                    _, slot, k = name.split("/", 2)
                    optimizer[slot][k] = z[name]
        ckpt = Checkpoint(model=model, best_model=best, optimizer=optimizer, **{k: meta[k] for k in _SCALARS})
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable ({e})") from None
    if training_key is not None and meta["training_key"] != training_key:
        raise CheckpointError(f"checkpoint {path} was made with other training parameters "
                              f"(key {meta['training_key'][:12]}…, this run {training_key[:12]}…); "
                              "resume with the same parameters or start afresh")
    return ckpt
