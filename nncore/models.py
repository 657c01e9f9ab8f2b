"""Forecasting models: a recurrent layer with a Dense head, and an MLP control.

Both share one interface so training and evaluation code never branch on the kind:

* ``forward(x, state=None) -> (prediction, state)`` with x (B, T, I) batch-first and prediction
  (B, O). ``state`` is always a tuple: ``(h,)`` for the RNN and GRU, ``(h, c)`` for the LSTM,
  ``()`` for the MLP; passed back, it carries the state into the next window.
* ``stateful``: whether carrying the state changes anything (False for the MLP).
* ``saturation(state)``: the fraction of saturated tanh units behind the last forward pass.
* ``backward(dpred) -> dx`` adds into ``grads``.
* ``loss_and_grad(x, y, loss="mse", state=None) -> (loss, state)`` does forward, loss and backward
  in one call; on the compiled backend with the MSE loss it runs the fused kernel, which never
  materialises the hidden-state sequence.
* ``config`` is a JSON-serialisable dict; ``build_model(**config)`` rebuilds the architecture.

:data:`MODELS` maps each kind to a :class:`ModelKind`: its constructor (every one takes the
same keywords) and what a scheduler needs to know without building it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._utils import as_dtype, as_generator, check_array
from .layers import Dense, Module
from .losses import get_loss
from .network import Sequential, mlp
from .recurrent import RECURRENT_LAYERS

#: |tanh| at or above this counts as a saturated unit (tanh' ≤ 0.02)
SATURATED = 0.99


def _saturated_share(a: np.ndarray) -> float:
    return float(np.mean(np.abs(a) >= SATURATED))


class RecurrentForecaster(Module):
    """The source's recurrent regression model: RNN/GRU/LSTM, then Dense on the last hidden state.

    ŷ = h_T W_headᵀ + b_head, where h_T is the recurrent layer's last hidden state.

    Parameters
    ----------
    kind : ``"rnn"`` | ``"gru"`` | ``"lstm"``
    hidden_size : int
    input_size : int, default 1 (a univariate series)
    output_size : int, default 1 (one step ahead; >1 for a direct multi-step horizon)
    dtype, rng : as for the layers; one generator initialises the recurrent layer, then the head.
    backend : the recurrent layer's backend, ``"auto"`` | ``"numpy"`` | ``"cython"`` (not part of ``config``:
        it changes speed, not results).

    Parameter keys: ``rnn.W_ih``, ``rnn.W_hh``, ``rnn.b_ih``, ``rnn.b_hh``, ``head.W``, ``head.b``.
    """

    def __init__(self, kind: str = "rnn", hidden_size: int = 24, input_size: int = 1, output_size: int = 1,
                 *, dtype=np.float64, rng=None, backend: str = "auto"):
        if kind not in RECURRENT_LAYERS:
            raise ValueError(f"unknown recurrent kind {kind!r}; valid kinds: {', '.join(RECURRENT_LAYERS)}")
        self.dtype = as_dtype(dtype)
        rng = as_generator(rng)
        self.kind = kind
        self.rnn = RECURRENT_LAYERS[kind](input_size, hidden_size, dtype=self.dtype, rng=rng, backend=backend)
        self.head = Dense(hidden_size, output_size, dtype=self.dtype, rng=rng)
        self.config = {"kind": kind, "hidden_size": int(hidden_size), "input_size": int(input_size),
                       "output_size": int(output_size), "dtype": self.dtype.name}

    def children(self) -> dict[str, Module]:
        return {"rnn": self.rnn, "head": self.head}

    stateful = True

    def forward(self, x, state=None):
        """x (B, T, I), the state tuple to start from (None = zeros) -> (prediction (B, O), last state)."""
        _, last = self.rnn.forward(x, self.rnn.unpack_state(state))
        state = self.rnn.pack_state(last)
        return self.head.forward(state[0]), state

    def backward(self, dpred):
        """Backpropagate ``dpred`` (B, O) through the head and the recurrent layer; returns dx."""
        return self.rnn.backward(None, self.rnn.last_state_grad(self.head.backward(dpred)))

    def saturation(self, state: tuple) -> float:
        """Share of the last state's tanh units at |tanh| ≥ 0.99 (an LSTM's tanh(c_T), else h_T)."""
        return _saturated_share(self.rnn.tanh_units(state))

    @staticmethod
    def multiply_adds(kind: str, window: int, hidden_size: int, input_size: int = 1, output_size: int = 1) -> int:
        """Multiply-adds of one forward + backward pass over one window (about 3× the forward)."""
        G = RECURRENT_LAYERS[kind].gates
        return 3 * (window * G * hidden_size * (hidden_size + input_size) + hidden_size * output_size)

    def loss_and_grad(self, x, y, loss: str = "mse", state=None):
        """Loss of the prediction for ``x`` against ``y`` (B, O); adds the gradients into ``grads``.

        Returns ``(loss, last state)``. With MSE on the compiled backend this is one fused kernel
        call (forward, head, loss and backward per batch tile); otherwise forward + backward.
        """
        fused = self.rnn.fused_train_step if loss == "mse" else None
        if fused is None:
            pred, state = self.forward(x, state)
            value, dpred = get_loss(loss)(pred, y)
            self.backward(dpred)
            return value, state
        x = self.rnn._check_x(x)
        y = check_array(y, self.dtype, 2, "y (B, O)", self.head.out_features)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows, x has {x.shape[0]} windows")
        p, hp = self.rnn.params, self.head.params
        value, last, grads = fused(x, y, self.rnn.unpack_state(state), p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"],
                                   hp["W"], hp["b"])
        for k in ("W_ih", "W_hh", "b_ih", "b_hh"):
            self.rnn.grads[k] += grads[k]
        self.head.grads["W"] += grads["W_out"]
        self.head.grads["b"] += grads["b_out"]
        return value, self.rnn.pack_state(last)

    def __repr__(self) -> str:
        return f"RecurrentForecaster({self.rnn!r}, {self.head!r})"


class MLPForecaster(Module):
    """Non-recurrent control: an MLP over the flattened window.

    ŷ = MLP(flatten(x)), x (B, T, I) with T = ``window`` fixed at construction.

    Parameters
    ----------
    window : int, the window length T
    hidden_size : int or sequence of ints (one per hidden layer)
    input_size, output_size : as :class:`RecurrentForecaster`
    activation : hidden activation name (default ``"tanh"``)

    Parameter keys are those of the inner :class:`~nncore.network.Sequential` under ``mlp.``.
    It has no state: ``forward(x, state=None)`` ignores ``state`` and returns ``(prediction, ())``.
    """

    kind = "mlp"
    stateful = False

    def __init__(self, window: int, hidden_size=24, input_size: int = 1, output_size: int = 1,
                 activation: str = "tanh", *, dtype=np.float64, rng=None):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.dtype = as_dtype(dtype)
        hidden = [int(hidden_size)] if np.isscalar(hidden_size) else [int(h) for h in hidden_size]
        self.window, self.input_size = int(window), int(input_size)
        self.mlp: Sequential = mlp([window * input_size, *hidden, output_size], activation,
                                   dtype=self.dtype, rng=as_generator(rng))
        self.config = {"kind": "mlp", "window": self.window, "hidden_size": hidden if len(hidden) > 1 else hidden[0],
                       "input_size": self.input_size, "output_size": int(output_size), "activation": activation,
                       "dtype": self.dtype.name}
        self._x_shape: tuple | None = None

    def children(self) -> dict[str, Module]:
        return {"mlp": self.mlp}

    def forward(self, x, state=None):
        x = check_array(x, self.dtype, 3, "MLPForecaster input x (B, T, I)")
        if x.shape[1:] != (self.window, self.input_size):
            raise ValueError(f"MLPForecaster expects windows of shape (B, {self.window}, {self.input_size}), "
                             f"got {x.shape}")
        self._x_shape = x.shape
        return self.mlp.forward(x.reshape(x.shape[0], -1)), ()

    def saturation(self, state: tuple = ()) -> float:
        """Share of the first hidden layer's units at |tanh| ≥ 0.99 in the last forward pass (nan if not tanh)."""
        layers = self.mlp.layers
        if len(layers) < 2 or getattr(layers[1], "name", "") != "tanh" or layers[1]._a is None:
            return float("nan")
        return _saturated_share(layers[1]._a)

    @staticmethod
    def multiply_adds(kind: str, window: int, hidden_size: int, input_size: int = 1, output_size: int = 1) -> int:
        """Multiply-adds of one forward + backward pass over one window (about 3× the forward)."""
        return 3 * hidden_size * (window * input_size + output_size)

    def backward(self, dpred):
        if self._x_shape is None:
            raise RuntimeError("MLPForecaster.backward called before forward")
        return self.mlp.backward(dpred).reshape(self._x_shape)

    def loss_and_grad(self, x, y, loss: str = "mse", state=None):
        """Forward, loss and backward; returns ``(loss, ())`` and adds the gradients into ``grads``."""
        pred, state = self.forward(x)
        value, dpred = get_loss(loss)(pred, y)
        self.backward(dpred)
        return value, state

    def __repr__(self) -> str:
        return f"MLPForecaster(window={self.window}, {self.mlp!r})"


@dataclass(frozen=True)
class ModelKind:
    """One entry of :data:`MODELS`: how to build a kind and what it costs.

    ``build(hidden_size, window=None, input_size=1, output_size=1, *, dtype, rng, backend)``: every
    kind takes the same keywords; a recurrent model reads any window length (``window`` unused),
    the MLP has no recurrent kernel (``backend`` unused).
    """

    build: Callable[..., Module]
    multiply_adds: Callable[..., int]   # (kind, window, hidden_size, input_size, output_size)
    stateful: bool

    def __call__(self, **config) -> Module:
        return self.build(**config)


def _recurrent(kind: str):
    def build(hidden_size: int = 24, window: int | None = None, input_size: int = 1, output_size: int = 1, *,
              dtype=np.float64, rng=None, backend: str = "auto", **kw):
        if kw:
            raise ValueError(f"unexpected parameters for model kind {kind!r}: {sorted(kw)}")
        return RecurrentForecaster(kind, hidden_size, input_size, output_size, dtype=dtype, rng=rng, backend=backend)
    return ModelKind(build, RecurrentForecaster.multiply_adds, stateful=True)


def _mlp(hidden_size=24, window: int | None = None, input_size: int = 1, output_size: int = 1,
         activation: str = "tanh", *, dtype=np.float64, rng=None, backend: str = "auto") -> MLPForecaster:
    if window is None:
        raise ValueError("model kind 'mlp' needs the window length (window=...)")
    return MLPForecaster(window, hidden_size, input_size, output_size, activation, dtype=dtype, rng=rng)


#: model kind -> :class:`ModelKind`; ``MODELS[kind](**config)`` builds one.
MODELS = {
    "rnn": _recurrent("rnn"),
    "gru": _recurrent("gru"),
    "lstm": _recurrent("lstm"),
    "mlp": ModelKind(_mlp, MLPForecaster.multiply_adds, stateful=False),
}


def build_model(kind: str, *, rng=None, **config):
    """Build a forecaster from its ``config`` dict (``build_model(**model.config)`` round-trips)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(MODELS)}")
    return MODELS[kind](rng=rng, **config)
