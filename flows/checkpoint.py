"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the epoch just finished, the model's parameters, the optimizer's state (Adam's
moments and step count, or SGD's buffers), the random generator's state, the best validation
epoch so far with its weights, the epochs since the best, and the per-epoch history. Training
resumed from it (``flows.training.train(resume=...)``) ends with the same weights, bit for bit,
as a run that was never interrupted (same data, configuration and thread count).

Stored as one ``.npz`` (no pickle: arrays under ``model/``, ``best/``, ``opt/<slot>/`` keys, the
scalars as a JSON string), written to a temporary file and renamed, then logged as the MLflow
artifact ``checkpoints/checkpoint.npz`` of the run, replacing the previous one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

ARTIFACT_DIR = "checkpoints"
FILENAME = "checkpoint.npz"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or made by different training parameters."""


def save(ckpt: dict, path: Path) -> Path:
    """Write ``ckpt`` (see :func:`flows.training.train`) atomically to ``path``."""
    arrays: dict[str, np.ndarray] = {}
    for k, a in ckpt["model"].items():
        arrays[f"model/{k}"] = a
    for k, a in ckpt["best_model"].items():
        arrays[f"best/{k}"] = a
    opt_scalars, opt_dicts = {}, []
    for slot, value in ckpt["optimizer"].items():
        if isinstance(value, dict):
            opt_dicts.append(slot)
            for k, a in value.items():
                arrays[f"opt/{slot}/{k}"] = a
        else:
            opt_scalars[slot] = value
    meta = {k: ckpt[k] for k in ("epoch", "best_epoch", "best_val_loss", "since_best", "history", "rng",
                                 "training_key", "elapsed")}
    meta["optimizer"], meta["optimizer_dicts"] = opt_scalars, opt_dicts
    arrays["meta"] = np.array(json.dumps(meta))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def load(path: Path, training_key: str | None = None) -> dict:
    """Read a checkpoint; with ``training_key``, refuse one made by other training parameters."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            ckpt = {**{k: v for k, v in meta.items() if k not in ("optimizer", "optimizer_dicts")},
                    "model": {}, "best_model": {},
                    "optimizer": {**meta["optimizer"], **{slot: {} for slot in meta["optimizer_dicts"]}}}
            for name in z.files:
                if name.startswith("model/"):
                    ckpt["model"][name[6:]] = z[name]
                elif name.startswith("best/"):
                    ckpt["best_model"][name[5:]] = z[name]
                elif name.startswith("opt/"):
                    _, slot, k = name.split("/", 2)
                    ckpt["optimizer"].setdefault(slot, {})[k] = z[name]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable ({e})") from None
    if training_key is not None and ckpt["training_key"] != training_key:
        raise CheckpointError(f"checkpoint {path} was made with other training parameters "
                              f"(key {ckpt['training_key'][:12]}…, this run {training_key[:12]}…); "
                              "resume with the same parameters or start afresh")
    return ckpt
