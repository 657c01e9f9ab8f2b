"""Small helpers shared by the layers: RNG handling, dtype and shape checks."""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: the dtype names every layer accepts
DTYPES = tuple(d.name for d in FLOAT_DTYPES)


def as_generator(rng=None) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` from a Generator, an int seed or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def as_dtype(dtype) -> np.dtype:
    """Validate a floating dtype (float32 or float64)."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def uniform(rng: np.random.Generator, bound: float, shape, dtype) -> np.ndarray:
    """Draw U(-bound, bound) of ``shape`` directly in ``dtype``."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def check_array(x, dtype: np.dtype, ndim: int, name: str, last_dim: int | None = None) -> np.ndarray:
    """Return ``x`` as an array of ``dtype`` with ``ndim`` dimensions.

    Non-float input (lists, ints) is converted; a float array of the other precision is an
    error rather than a silent up- or down-cast.
    """
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        if arr.dtype != dtype:
            raise ValueError(f"{name} has dtype {arr.dtype}, expected {dtype} (convert it explicitly)")
    elif arr.dtype.kind in "iub":
        arr = arr.astype(dtype)
    else:
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if last_dim is not None and arr.shape[-1] != last_dim:
        raise ValueError(f"{name} must have last dimension {last_dim}, got shape {arr.shape}")
    return arr
