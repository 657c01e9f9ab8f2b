"""Optimizers and gradient clipping acting on any module's ``params``/``grads`` dicts.

An optimizer keeps references to the module's parameter and gradient arrays and updates the
parameters in place, so layers, models and containers all work the same way.
"""
from __future__ import annotations

import math

import numpy as np


def _arrays(target) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    params, grads = target.params, target.grads
    if set(params) != set(grads):
        raise ValueError("params and grads must have the same keys")
    return params, grads


class Optimizer:
    def __init__(self, target, lr: float):
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a finite number > 0, got {lr}")
        self.lr = float(lr)
        self.params, self.grads = _arrays(target)

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Optimizer state as plain arrays and numbers (for checkpoints)."""
        return {"lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])


class SGD(Optimizer):
    """Stochastic gradient descent with (optionally Nesterov) momentum, PyTorch's update rule.

    buf ← momentum · buf + g (buf = g on the first step);  p ← p − lr · buf
    (Nesterov: p ← p − lr · (g + momentum · buf)).
    """

    def __init__(self, target, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(target, lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.buffers: dict[str, np.ndarray] = {}

    def step(self) -> None:
        for key, p in self.params.items():
            g = self.grads[key]
            if self.momentum:
                buf = self.buffers.get(key)
                if buf is None:
                    buf = self.buffers[key] = g.copy()
                else:
                    buf *= self.momentum
                    buf += g
                g = g + self.momentum * buf if self.nesterov else buf
            p -= self.lr * g

    def state_dict(self) -> dict:
        return {"lr": self.lr, "buffers": {k: v.copy() for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffers = {k: np.array(v, dtype=self.params[k].dtype) for k, v in state["buffers"].items()}


class Adam(Optimizer):
    """Adam with PyTorch's update rule and defaults (betas 0.9/0.999, eps 1e-8)::

        m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
        p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + eps)
    """

    def __init__(self, target, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(target, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)
        self.t = 0
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        bias_correction1 = 1 - b1 ** self.t
        bias_correction2_sqrt = math.sqrt(1 - b2 ** self.t)
        step_size = self.lr / bias_correction1
        for key, p in self.params.items():
            g, m, v = self.grads[key], self.m[key], self.v[key]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            denom = np.sqrt(v) / bias_correction2_sqrt + self.eps
            p -= step_size * (m / denom)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "t": self.t, "m": {k: a.copy() for k, a in self.m.items()},
                "v": {k: a.copy() for k, a in self.v.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.t = int(state["t"])
        for name in ("m", "v"):
            target = getattr(self, name)
            if set(state[name]) != set(target):
                raise ValueError(f"Adam state {name!r} keys do not match the parameters")
            for k, a in state[name].items():
                target[k][...] = a


#: name -> optimizer class; every class takes ``(target, lr)`` and PyTorch's defaults for the rest.
OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def clip_grad_norm(target, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    ``target`` is a module or optimizer (anything with ``grads``) or a dict of gradient arrays.
    Returns the norm *before* clipping (for logging). Like PyTorch, the scale is
    ``max_norm / (norm + 1e-6)`` and gradients are left untouched when the norm is not finite,
    so the caller can detect divergence.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    grads = target if isinstance(target, dict) else target.grads
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if math.isfinite(total):
        scale = max_norm / (total + 1e-6)
        if scale < 1:
            for g in grads.values():
                g *= scale
    return total
