"""Elementwise activations and their derivatives.

Each activation is an :class:`ActivationFn` with ``f(z)``, the first derivative ``df(z, a)``
and the second derivative ``d2f(z, a)``, where ``a = f(z)`` is the saved output. Derivatives
use the saved output where that is cheaper (sigmoid, tanh), so a backward pass never
recomputes the forward. The second derivative is needed by the gradient-norm penalty
(double backpropagation, :mod:`nncore.losses`).

Registry: :data:`ACTIVATIONS`, looked up with :func:`get_activation`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function: no overflow for any finite input."""
    # exp(-|z|) lies in (0, 1], so neither branch overflows; dtype is preserved.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def tanh(z: np.ndarray) -> np.ndarray:
    return np.tanh(z)


def relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0)


def leaky_relu(z: np.ndarray, slope: float = 0.01) -> np.ndarray:
    return np.where(z > 0, z, slope * z)


@dataclass(frozen=True)
class ActivationFn:
    """An activation ``f`` with derivatives expressed through ``z`` and the saved ``a = f(z)``."""

    name: str
    f: Callable[[np.ndarray], np.ndarray]
    df: Callable[[np.ndarray, np.ndarray], np.ndarray]
    d2f: Callable[[np.ndarray, np.ndarray], np.ndarray]
    params: dict = field(default_factory=dict)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.f(z)


def _zeros_like(z, a):
    return np.zeros_like(z)


def _make_sigmoid() -> ActivationFn:
    return ActivationFn(
        "sigmoid",
        sigmoid,
        lambda z, a: a * (1 - a),
        lambda z, a: a * (1 - a) * (1 - 2 * a),
    )


def _make_tanh() -> ActivationFn:
    return ActivationFn(
        "tanh",
        tanh,
        lambda z, a: 1 - a * a,
        lambda z, a: -2 * a * (1 - a * a),
    )


def _make_relu() -> ActivationFn:
    # Derivative at exactly 0 is taken as 0 (the subgradient PyTorch uses).
    return ActivationFn("relu", relu, lambda z, a: (z > 0).astype(z.dtype), _zeros_like)


def _make_leaky_relu(slope: float = 0.01) -> ActivationFn:
    if not slope >= 0:
        raise ValueError(f"leaky_relu slope must be >= 0, got {slope}")
    return ActivationFn(
        "leaky_relu",
        lambda z: leaky_relu(z, slope),
        lambda z, a: np.where(z > 0, 1, slope).astype(z.dtype),
        _zeros_like,
        {"slope": slope},
    )


def _make_identity() -> ActivationFn:
    return ActivationFn("identity", lambda z: z, lambda z, a: np.ones_like(z), _zeros_like)


#: name -> factory taking the activation's keyword parameters (only leaky_relu has one: ``slope``).
ACTIVATIONS: dict[str, Callable[..., ActivationFn]] = {
    "sigmoid": _make_sigmoid,
    "tanh": _make_tanh,
    "relu": _make_relu,
    "leaky_relu": _make_leaky_relu,
    "identity": _make_identity,
}


def get_activation(name: str, **kwargs) -> ActivationFn:
    """Build the registered activation ``name`` (e.g. ``get_activation("leaky_relu", slope=0.1)``)."""
    try:
        factory = ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(sorted(ACTIVATIONS))}") from None
    return factory(**kwargs)
