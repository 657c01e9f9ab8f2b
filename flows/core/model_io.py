"""Saving and loading a trained forecaster without pickle: ``weights.npz`` + ``config.json``.

The config holds everything needed to turn raw prices into a forecast: the architecture
(``model``), the window, the horizon and the fitted transform (``scaler``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nncore import build_model

from .transforms import transform_from_dict
from .windowing import Windows

WEIGHTS = "weights.npz"
CONFIG = "config.json"
FORMAT_VERSION = 1


def save_forecaster(model, windows: Windows, directory: Path, extra: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / WEIGHTS, **model.state_dict())
    config = {
        "format_version": FORMAT_VERSION,
        "model": model.config,
        "window": windows.window,
        "horizon": windows.horizon,
        "scaler": windows.scaler.to_dict(),
        **(extra or {}),
    }
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    return directory


class Forecaster:
    """A loaded model plus its preprocessing: raw windows (n, W) in → forecasts (n, h) out."""

    def __init__(self, model, config: dict):
        self.model, self.config = model, config
        self.scaler = transform_from_dict(config["scaler"])
        self.window, self.horizon = config["window"], config["horizon"]

    def predict(self, raw_windows) -> np.ndarray:
        raw = np.asarray(raw_windows, dtype=np.float64)
        if raw.ndim == 1:
            raw = raw[None, :]
        if raw.ndim != 2 or raw.shape[1] != self.window:
            raise ValueError(f"expected windows of shape (n, {self.window}) in original units, got {raw.shape}")
        if not np.all(np.isfinite(raw)):
            raise ValueError("input windows contain NaN or infinite values")
        pred, _ = self.model.forward(self.scaler.encode_inputs(raw)[..., None].astype(self.model.dtype))
        return self.scaler.decode(pred, raw[:, -1])


def load_forecaster(directory: Path) -> Forecaster:
    directory = Path(directory)
    config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory / CONFIG}: unsupported format_version {config.get('format_version')!r}")
    model = build_model(**config["model"])
    with np.load(directory / WEIGHTS, allow_pickle=False) as weights:
        model.load_state_dict({k: weights[k] for k in weights.files})
    return Forecaster(model, config)
