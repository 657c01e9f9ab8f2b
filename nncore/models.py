"""Forecasting models: a recurrent layer with a Dense head, and an MLP control.

Both share one interface so training and evaluation code never branch on the kind:

* ``forward(x, h=None) -> (prediction, state)`` with x (B, T, I) batch-first and prediction
  (B, O). ``state`` is the recurrent layer's last state (``(h, c)`` for an LSTM, ``None`` for the
  MLP) and can be passed back as ``h`` to carry it into the next window.
* ``backward(dpred) -> dx`` adds into ``grads``.
* ``loss_and_grad(x, y, loss="mse", h=None) -> (loss, state)`` does forward, loss and backward
  in one call; on the compiled backend with the MSE loss it runs the fused kernel, which never
  materialises the hidden-state sequence.
* ``config`` is a JSON-serialisable dict; ``build_model(**config)`` rebuilds the architecture.
"""
from __future__ import annotations

import numpy as np

from ._utils import as_dtype, as_generator, check_array
from .layers import Dense, Module
from .losses import get_loss
from .network import Sequential, mlp
from .recurrent import RECURRENT_LAYERS


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

    def forward(self, x, h=None):
        """x (B, T, I), h the state to start from (None = zeros) -> (prediction (B, O), last state)."""
        _, state = self.rnn.forward(x, h)
        h_T = state[0] if self.kind == "lstm" else state
        return self.head.forward(h_T), state

    def backward(self, dpred):
        """Backpropagate ``dpred`` (B, O) through the head and the recurrent layer; returns dx."""
        dh_T = self.head.backward(dpred)
        if self.kind == "lstm":
            return self.rnn.backward(None, (dh_T, None))
        return self.rnn.backward(None, dh_T)

    def loss_and_grad(self, x, y, loss: str = "mse", h=None):
        """Loss of the prediction for ``x`` against ``y`` (B, O); adds the gradients into ``grads``.

        Returns ``(loss, last state)``. With MSE on the compiled backend this is one fused kernel
        call (forward, head, loss and backward per batch tile); otherwise forward + backward.
        """
        fused = self.rnn.fused_train_step if loss == "mse" else None
        if fused is None:
            pred, state = self.forward(x, h)
            value, dpred = get_loss(loss)(pred, y)
            self.backward(dpred)
            return value, state
        x = self.rnn._check_x(x)
        y = check_array(y, self.dtype, 2, "y (B, O)", self.head.out_features)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows, x has {x.shape[0]} windows")
        p, hp = self.rnn.params, self.head.params
        value, state, grads = fused(x, y, h, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"], hp["W"], hp["b"])
        for k in ("W_ih", "W_hh", "b_ih", "b_hh"):
            self.rnn.grads[k] += grads[k]
        self.head.grads["W"] += grads["W_out"]
        self.head.grads["b"] += grads["b_out"]
        return value, state

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
    ``forward(x, h=None)`` ignores ``h`` and returns ``(prediction, None)``.
    """

    kind = "mlp"

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

    def forward(self, x, h=None):
        x = check_array(x, self.dtype, 3, "MLPForecaster input x (B, T, I)")
        if x.shape[1:] != (self.window, self.input_size):
            raise ValueError(f"MLPForecaster expects windows of shape (B, {self.window}, {self.input_size}), got {x.shape}")
        self._x_shape = x.shape
        return self.mlp.forward(x.reshape(x.shape[0], -1)), None

    def backward(self, dpred):
        if self._x_shape is None:
            raise RuntimeError("MLPForecaster.backward called before forward")
        return self.mlp.backward(dpred).reshape(self._x_shape)

    def loss_and_grad(self, x, y, loss: str = "mse", h=None):
        """Forward, loss and backward; returns ``(loss, None)`` and adds the gradients into ``grads``."""
        pred, _ = self.forward(x)
        value, dpred = get_loss(loss)(pred, y)
        self.backward(dpred)
        return value, None

    def __repr__(self) -> str:
        return f"MLPForecaster(window={self.window}, {self.mlp!r})"


def _recurrent(kind):
    def build(hidden_size: int = 24, input_size: int = 1, output_size: int = 1, *, dtype=np.float64, rng=None,
              backend: str = "auto", **kw):
        if kw:
            raise ValueError(f"unexpected parameters for model kind {kind!r}: {sorted(kw)}")
        return RecurrentForecaster(kind, hidden_size, input_size, output_size, dtype=dtype, rng=rng, backend=backend)
    return build


#: model kind -> constructor; every constructor accepts ``dtype`` and ``rng``.
MODELS = {
    "rnn": _recurrent("rnn"),
    "gru": _recurrent("gru"),
    "lstm": _recurrent("lstm"),
    "mlp": MLPForecaster,
}


def build_model(kind: str, *, rng=None, **config):
    """Build a forecaster from its ``config`` dict (``build_model(**model.config)`` round-trips)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(MODELS)}")
    return MODELS[kind](rng=rng, **config)
