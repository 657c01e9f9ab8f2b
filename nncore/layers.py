"""Layer base class, the fully connected ``Dense`` layer and the ``Activation`` layer.

Conventions shared by every layer and model in nncore:

* ``params`` maps a name to an ndarray; ``grads`` has the same keys and shapes.
* ``grads`` start at zero, ``backward`` *adds* into them (``+=``), ``zero_grad`` resets them.
  Parameters and gradients are only ever updated in place, so a container's ``params`` and
  ``grads`` views (see :class:`Module`) always alias the layers' arrays.
* ``forward`` caches what ``backward`` needs; ``backward`` returns the gradient with respect to
  the layer's input.
* Every array of a layer has the layer's ``dtype`` (float32 or float64); float input of the other
  precision is rejected rather than silently converted.
"""
from __future__ import annotations

import math

import numpy as np

from ._utils import as_dtype, as_generator, check_array, uniform
from .activations import ActivationFn, get_activation


class Module:
    """Anything with ``params``/``grads`` dicts: layers and models.

    Containers override :meth:`children`; their ``params``/``grads`` are flat dicts whose keys are
    ``"<child>.<name>"`` and whose values are the children's own arrays.
    """

    dtype: np.dtype

    def children(self) -> dict[str, "Module"]:
        return {}

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {f"{c}.{k}": v for c, m in self.children().items() for k, v in m.params.items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return {f"{c}.{k}": v for c, m in self.children().items() for k, v in m.grads.items()}

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def num_params(self) -> int:
        """Number of trainable scalars."""
        return int(sum(p.size for p in self.params.values()))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, keyed as in ``params``."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters in place; keys, shapes must match, dtype is converted."""
        params = self.params
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"state dict mismatch: missing keys {missing}, unexpected keys {unexpected}")
        for k, p in params.items():
            v = np.asarray(state[k])
            if v.shape != p.shape:
                raise ValueError(f"state dict entry {k!r} has shape {v.shape}, expected {p.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"state dict entry {k!r} contains non-finite values")
        for k, p in params.items():
            p[...] = state[k]


class Layer(Module):
    """A leaf module owning its ``params`` and ``grads`` dicts."""

    def __init__(self, dtype=np.float64):
        self.dtype = as_dtype(dtype)
        self._params: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self._params

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self._grads

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self._params[name] = value
        self._grads[name] = np.zeros_like(value)


class Dense(Layer):
    """Fully connected layer ``y = x Wᵀ + b``.

    Parameters
    ----------
    in_features, out_features : int
    dtype : float32 or float64
    rng : numpy.random.Generator, int seed or None
        Initialisation follows ``torch.nn.Linear``: ``W`` and ``b`` ~ U(-1/√in, 1/√in).

    ``params["W"]`` has shape ``(out_features, in_features)``, ``params["b"]`` ``(out_features,)``.
    Input ``x`` has shape ``(..., in_features)``; output ``(..., out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, *, dtype=np.float64, rng=None):
        super().__init__(dtype)
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Dense sizes must be >= 1, got in_features={in_features}, out_features={out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        rng = as_generator(rng)
        bound = 1 / math.sqrt(in_features)
        self._add_param("W", uniform(rng, bound, (out_features, in_features), self.dtype))
        self._add_param("b", uniform(rng, bound, (out_features,), self.dtype))
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        x = check_array(x, self.dtype, max(x.ndim, 1), "Dense input", self.in_features)
        self._x = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Accumulate ``dW = dyᵀ x``, ``db = Σ dy`` and return ``dx = dy W``."""
        if self._x is None:
            raise RuntimeError("Dense.backward called before forward")
        x2 = self._x.reshape(-1, self.in_features)
        dy2 = np.asarray(dy).reshape(-1, self.out_features)
        self.grads["W"] += dy2.T @ x2
        self.grads["b"] += dy2.sum(axis=0)
        return dy @ self.params["W"]

    def __repr__(self) -> str:
        return f"Dense({self.in_features}, {self.out_features}, dtype={self.dtype})"


class Activation(Layer):
    """Elementwise activation as a parameter-free layer (``Activation("leaky_relu", slope=0.1)``)."""

    def __init__(self, name: str | ActivationFn, *, dtype=np.float64, **kwargs):
        super().__init__(dtype)
        self.fn = name if isinstance(name, ActivationFn) else get_activation(name, **kwargs)
        self._z: np.ndarray | None = None
        self._a: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.fn.name

    def forward(self, z: np.ndarray) -> np.ndarray:
        self._z = z
        self._a = self.fn.f(z)
        return self._a

    def backward(self, da: np.ndarray) -> np.ndarray:
        if self._a is None:
            raise RuntimeError("Activation.backward called before forward")
        return da * self.fn.df(self._z, self._a)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.fn.params.items())
        return f"Activation({self.fn.name!r}{extra})"
