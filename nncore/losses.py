"""Losses (the source's eq. 1.1 and 1.2), means over every element of the prediction::

    MSE = 1/N Σ (ŷ − y)²        ∂/∂ŷ = 2 (ŷ − y) / N
    MAE = 1/N Σ |ŷ − y|         ∂/∂ŷ = sign(ŷ − y) / N

MAE is not differentiable where ŷ = y; we use the subgradient 0 there (``np.sign(0) = 0``, as
PyTorch's ``L1Loss`` does). Regularisation is in :mod:`nncore.regularization`.
"""
from __future__ import annotations

import numpy as np


def _check_pair(pred: np.ndarray, target: np.ndarray, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: prediction shape {pred.shape} does not match target shape {target.shape}")


def mse(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error and its gradient with respect to ``pred`` (same shape as ``pred``)."""
    _check_pair(pred, target, "mse")
    diff = pred - target
    return float(np.mean(diff * diff)), (2 / diff.size) * diff


def mae(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean absolute error and its (sub)gradient with respect to ``pred``; 0 where pred == target."""
    _check_pair(pred, target, "mae")
    diff = pred - target
    return float(np.mean(np.abs(diff))), np.sign(diff) / diff.size


#: name -> loss function ``(pred, target) -> (loss, dpred)``
LOSSES = {"mse": mse, "mae": mae}


def get_loss(name: str):
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}") from None
