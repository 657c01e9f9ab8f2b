"""Central finite-difference gradient checking (float64)."""
from __future__ import annotations

from typing import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """∂f/∂x by central differences, perturbing ``x`` in place (and restoring it).

    ``f`` takes no arguments and reads ``x`` through a closure (the array is a parameter, an
    input or a state). ``x`` must be float64: float32 differences carry too much rounding.
    """
    if x.dtype != np.float64:
        raise ValueError(f"gradient checks need float64 arrays, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array it can perturb in place")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = f()
        flat[i] = old - eps
        f_minus = f()
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """‖a − n‖ / max(‖a‖ + ‖n‖, 1e-12): 0 for equal arrays, 1 for opposite ones."""
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    if analytic.shape != numeric.shape:
        raise ValueError(f"gradient shapes differ: analytic {analytic.shape}, numeric {numeric.shape}")
    num = np.linalg.norm((analytic - numeric).ravel())
    den = max(np.linalg.norm(analytic.ravel()) + np.linalg.norm(numeric.ravel()), 1e-12)
    return float(num / den)
