"""Forecasting models: a recurrent layer with a Dense head, an MLP control and a linear baseline.

All share one interface so training and evaluation code never branch on the kind:

* ``forward(x, state=None, future=None) -> (prediction, state)`` with x (B, T, I) batch-first
  (the target and any observed covariates as channels) and prediction (B, O). ``state`` is
  always a tuple: ``(h,)`` for the RNN and GRU, ``(h, c)`` for the LSTM, ``()`` for the MLP and
  the linear model; passed back, it carries the state into the next window.
* ``future`` (B, F): the known-in-advance covariates of the horizon, flattened (F = horizon ×
  covariates). A model built with ``future_size=F > 0`` requires it; one built with
  ``future_size=0`` (the default) rejects it. ``backward`` does not return its gradient.
* ``stateful``: whether carrying the state changes anything (False for the MLP and the linear model).
* ``saturation(state)``: the fraction of saturated tanh units behind the last forward pass.
* ``predict(x, state=None, future=None)``: ``forward`` for inference (same results, no cache for a
  backward; the recurrent models run the inference kernel with the head fused).
* ``backward(dpred) -> dx`` adds into ``grads``.
* ``loss_and_grad(x, y, loss="mse", state=None, future=None) -> (loss, state)`` does forward, loss
  and backward in one call; on the compiled backend with the MSE loss it runs the fused kernel,
  which never materialises the hidden-state sequence.
* ``config`` is a JSON-serialisable dict; ``build_model(**config)`` rebuilds the architecture.
  ``future_size`` enters it only when > 0, so configs saved before it existed are unchanged.

:data:`MODELS` maps each kind to a :class:`ModelKind`: its constructor (every one takes the
same keywords) and what a scheduler needs to know without building it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._utils import as_dtype, as_generator, check_array
from .layers import Dense, Module
from .losses import get_loss, mse
from .network import Sequential, mlp
from .recurrent import RECURRENT_LAYERS

#: |tanh| at or above this counts as a saturated unit (tanh' ≤ 0.02)
SATURATED = 0.99


def _saturated_share(a: np.ndarray) -> float:
    return np.count_nonzero(np.abs(a) >= SATURATED) / a.size  # a third of np.mean's time: no float cast


def _future_size(future_size) -> int:
    if isinstance(future_size, bool) or not isinstance(future_size, (int, np.integer)) or future_size < 0:
        raise ValueError(f"future_size must be an integer >= 0, got {future_size!r}")
    return int(future_size)


def _check_future(future, future_size: int, dtype: np.dtype, batch: int, owner: str) -> np.ndarray | None:
    """``future`` as a (batch, future_size) array of ``dtype``; None for a model without future inputs."""
    if future_size == 0:
        if future is not None:
            raise ValueError(f"{owner} was built with future_size=0 and takes no future inputs, got future of shape "
                             f"{np.shape(future)} (build it with future_size=F to use them)")
        return None
    if future is None:
        raise ValueError(f"{owner} was built with future_size={future_size}: pass future=... of shape "
                         f"(B, {future_size}), the known-in-advance covariates of the horizon")
    name = f"{owner} future (B, {future_size})"
    future = check_array(future, dtype, 2, name, future_size)
    if future.shape[0] != batch:
        raise ValueError(f"{name} has shape {future.shape}, expected ({batch}, {future_size}): one row per window of x")
    return future


class RecurrentForecaster(Module):
    """The source's recurrent regression model: RNN/GRU/LSTM, then Dense on the last hidden state.

    ŷ = [h_T, future] W_headᵀ + b_head, where h_T is the recurrent layer's last hidden state and
    ``future`` the known-in-advance inputs (absent when ``future_size`` is 0: ŷ = h_T W_headᵀ + b_head).

    Parameters
    ----------
    kind : ``"rnn"`` | ``"gru"`` | ``"lstm"``
    hidden_size : int
    input_size : int, default 1 (a univariate series; > 1 with observed covariates as channels)
    output_size : int, default 1 (one step ahead; >1 for a direct multi-step horizon)
    future_size : int, default 0; F > 0 feeds the head ``future`` (B, F) beside h_T
    dtype, rng : as for the layers; one generator initialises the recurrent layer, then the head.
    backend : the recurrent layer's backend, ``"auto"`` | ``"numpy"`` | ``"cython"`` (not part of ``config``:
        it changes speed, not results).

    Parameter keys: ``rnn.W_ih``, ``rnn.W_hh``, ``rnn.b_ih``, ``rnn.b_hh``, ``head.W`` (O, H + F), ``head.b``.
    """

    def __init__(self, kind: str = "rnn", hidden_size: int = 24, input_size: int = 1, output_size: int = 1,
                 future_size: int = 0, *, dtype=np.float64, rng=None, backend: str = "auto"):
        if kind not in RECURRENT_LAYERS:
            raise ValueError(f"unknown recurrent kind {kind!r}; valid kinds: {', '.join(RECURRENT_LAYERS)}")
        self.dtype = as_dtype(dtype)
        rng = as_generator(rng)
        self.kind = kind
        self.future_size = _future_size(future_size)
        self.rnn = RECURRENT_LAYERS[kind](input_size, hidden_size, dtype=self.dtype, rng=rng, backend=backend)
        self.head = Dense(hidden_size + self.future_size, output_size, dtype=self.dtype, rng=rng)
        self.config = {"kind": kind, "hidden_size": int(hidden_size), "input_size": int(input_size),
                       "output_size": int(output_size), "dtype": self.dtype.name}
        if self.future_size:
            self.config["future_size"] = self.future_size

    def children(self) -> dict[str, Module]:
        return {"rnn": self.rnn, "head": self.head}

    stateful = True

    def forward(self, x, state=None, future=None):
        """x (B, T, I), the state tuple to start from (None = zeros), future (B, F) when F > 0
        -> (prediction (B, O), last state)."""
        x = self.rnn._check_x(x)
        future = _check_future(future, self.future_size, self.dtype, x.shape[0], "RecurrentForecaster")
        _, last = self.rnn.forward(x, self.rnn.unpack_state(state))
        state = self.rnn.pack_state(last)
        h_T = state[0] if future is None else np.concatenate([state[0], future], axis=1)
        return self.head.forward(h_T), state

    def predict(self, x, state=None, future=None):
        """:meth:`forward` for inference: the same ``(prediction, last state)``, no cache kept for a backward.

        On the compiled backend one inference-kernel call per batch (the recurrent forward without the
        training forward's per-step buffer, and the head on h_T fused); the future inputs' share of the
        head, future W_fᵀ, is added after it. Used for validation, evaluation and prediction.
        """
        x = self.rnn._check_x(x, remember=False)
        future = _check_future(future, self.future_size, self.dtype, x.shape[0], "RecurrentForecaster")
        W, H = self.head.params["W"], self.rnn.hidden_size
        pred, last = self.rnn.predict(x, self.rnn.unpack_state(state), W[:, :H], self.head.params["b"])
        if future is not None:
            pred = pred + future @ W[:, H:].T
        return pred, self.rnn.pack_state(last)

    def backward(self, dpred):
        """Backpropagate ``dpred`` (B, O) through the head and the recurrent layer; returns dx."""
        dh_T = self.head.backward(dpred)
        if self.future_size:  # the head's input is [h_T, future]; the future needs no gradient
            dh_T = np.ascontiguousarray(dh_T[:, :self.rnn.hidden_size])
        return self.rnn.backward(None, self.rnn.last_state_grad(dh_T))

    def saturation(self, state: tuple) -> float:
        """Share of the last state's tanh units at |tanh| ≥ 0.99 (an LSTM's tanh(c_T), else h_T)."""
        return _saturated_share(self.rnn.tanh_units(state))

    @staticmethod
    def multiply_adds(kind: str, window: int, hidden_size: int, input_size: int = 1, output_size: int = 1,
                      future_size: int = 0) -> int:
        """Multiply-adds of one forward + backward pass over one window (about 3× the forward)."""
        G = RECURRENT_LAYERS[kind].gates
        return 3 * (window * G * hidden_size * (hidden_size + input_size) + (hidden_size + future_size) * output_size)

    def loss_and_grad(self, x, y, loss: str = "mse", state=None, future=None):
        """Loss of the prediction for ``x`` (and ``future``) against ``y`` (B, O); adds the gradients into ``grads``.

        Returns ``(loss, last state)``. With MSE on the compiled backend this is one fused kernel
        call (forward, head, loss and backward per batch tile); otherwise forward + backward.

        Future inputs reach the fused kernel, whose head reads h_T alone, through the split
        W_head = [W_h | W_f]: with y' = y − future W_fᵀ, ŷ − y = (h_T W_hᵀ + b) − y', so the
        kernel's loss on (W_h, b, y') is the loss, and its gradients are those of the recurrent
        layer, W_h and b. dW_f = dŷᵀ future, with dŷ from ŷ rebuilt from the returned h_T.
        """
        fused = self.rnn.fused_train_step if loss == "mse" else None
        if fused is None:
            pred, state = self.forward(x, state, future)
            value, dpred = get_loss(loss)(pred, y)
            self.backward(dpred)
            return value, state
        x = self.rnn._check_x(x)
        y = check_array(y, self.dtype, 2, "y (B, O)", self.head.out_features)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows, x has {x.shape[0]} windows")
        future = _check_future(future, self.future_size, self.dtype, x.shape[0], "RecurrentForecaster")
        p, hp = self.rnn.params, self.head.params
        H = self.rnn.hidden_size
        W_h, W_f = hp["W"][:, :H], hp["W"][:, H:]
        target = y if future is None else y - future @ W_f.T
        value, last, grads = fused(x, target, self.rnn.unpack_state(state), p["W_ih"], p["W_hh"], p["b_ih"],
                                   p["b_hh"], W_h, hp["b"])
        for k in ("W_ih", "W_hh", "b_ih", "b_hh"):
            self.rnn.grads[k] += grads[k]
        self.head.grads["W"][:, :H] += grads["W_out"]
        self.head.grads["b"] += grads["b_out"]
        state = self.rnn.pack_state(last)
        if future is not None:
            pred = state[0] @ W_h.T + hp["b"] + future @ W_f.T
            _, dpred = mse(pred, y)  # 2 (ŷ − y) / (B·O), the kernel's normalisation
            self.head.grads["W"][:, H:] += dpred.T @ future
        return value, state

    def __repr__(self) -> str:
        return f"RecurrentForecaster({self.rnn!r}, {self.head!r})"


class _WindowForecaster(Module):
    """Shared by the MLP and the linear model: a Dense network over z = [flatten(x), future].

    Subclasses set ``window``, ``input_size``, ``future_size``, ``dtype`` and ``_net`` (the network
    that reads z). Stateless: ``forward(x, state=None, future=None)`` ignores ``state`` and
    returns ``(prediction, ())``.
    """

    stateful = False
    window: int
    input_size: int
    future_size: int

    def _init_input(self, window: int, input_size: int, future_size: int) -> int:
        """Validate and set the input sizes; returns the width of z, T·I + F."""
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        self.window, self.input_size = int(window), int(input_size)
        self.future_size = _future_size(future_size)
        self._x_shape: tuple | None = None
        return self.window * self.input_size + self.future_size

    def flat_input(self, x, future=None) -> np.ndarray:
        """The network's input z = [flatten(x), future]: (B, T·I + F), checked against the model's sizes."""
        name = type(self).__name__
        x = check_array(x, self.dtype, 3, f"{name} input x (B, T, I)")
        if x.shape[1:] != (self.window, self.input_size):
            raise ValueError(f"{name} expects windows of shape (B, {self.window}, {self.input_size}), got {x.shape}")
        future = _check_future(future, self.future_size, self.dtype, x.shape[0], name)
        flat = x.reshape(x.shape[0], -1)
        return flat if future is None else np.concatenate([flat, future], axis=1)

    def forward(self, x, state=None, future=None):
        """x (B, T, I), future (B, F) when F > 0 -> (prediction (B, O), ())."""
        z = self.flat_input(x, future)
        self._x_shape = (z.shape[0], self.window, self.input_size)
        return self._net.forward(z), ()

    def predict(self, x, state=None, future=None):
        """:meth:`forward` for inference (the same: a window model keeps nothing a backward would not need)."""
        return self.forward(x, state, future)

    def backward(self, dpred):
        """Backpropagate ``dpred`` (B, O); returns dx (B, T, I) (the future needs no gradient)."""
        if self._x_shape is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        dz = self._net.backward(dpred)
        return dz[:, :self.window * self.input_size].reshape(self._x_shape)

    def loss_and_grad(self, x, y, loss: str = "mse", state=None, future=None):
        """Forward, loss and backward; returns ``(loss, ())`` and adds the gradients into ``grads``."""
        pred, state = self.forward(x, future=future)
        value, dpred = get_loss(loss)(pred, y)
        self.backward(dpred)
        return value, state


class MLPForecaster(_WindowForecaster):
    """Non-recurrent control: an MLP over the flattened window and the future inputs.

    ŷ = MLP([flatten(x), future]), x (B, T, I) with T = ``window`` fixed at construction,
    future (B, F) when ``future_size`` F > 0.

    Parameters
    ----------
    window : int, the window length T
    hidden_size : int or sequence of ints (one per hidden layer)
    input_size, output_size, future_size : as :class:`RecurrentForecaster`
    activation : hidden activation name (default ``"tanh"``)

    Parameter keys are those of the inner :class:`~nncore.network.Sequential` under ``mlp.``; the
    first ``mlp.0.W`` is (hidden, T·I + F).
    It has no state: ``forward(x, state=None, future=None)`` ignores ``state`` and returns ``(prediction, ())``.
    """

    kind = "mlp"

    def __init__(self, window: int, hidden_size=24, input_size: int = 1, output_size: int = 1,
                 activation: str = "tanh", future_size: int = 0, *, dtype=np.float64, rng=None):
        self.dtype = as_dtype(dtype)
        width = self._init_input(window, input_size, future_size)
        hidden = [int(hidden_size)] if np.isscalar(hidden_size) else [int(h) for h in hidden_size]
        self.mlp: Sequential = mlp([width, *hidden, output_size], activation, dtype=self.dtype, rng=as_generator(rng))
        self._net = self.mlp
        self.config = {"kind": "mlp", "window": self.window, "hidden_size": hidden if len(hidden) > 1 else hidden[0],
                       "input_size": self.input_size, "output_size": int(output_size), "activation": activation,
                       "dtype": self.dtype.name}
        if self.future_size:
            self.config["future_size"] = self.future_size

    def children(self) -> dict[str, Module]:
        return {"mlp": self.mlp}

    def saturation(self, state: tuple = ()) -> float:
        """Share of the first hidden layer's units at |tanh| ≥ 0.99 in the last forward pass (nan if not tanh)."""
        layers = self.mlp.layers
        if len(layers) < 2 or getattr(layers[1], "name", "") != "tanh" or layers[1]._a is None:
            return float("nan")
        return _saturated_share(layers[1]._a)

    @staticmethod
    def multiply_adds(kind: str, window: int, hidden_size: int, input_size: int = 1, output_size: int = 1,
                      future_size: int = 0) -> int:
        """Multiply-adds of one forward + backward pass over one window (about 3× the forward)."""
        return 3 * hidden_size * (window * input_size + future_size + output_size)

    def __repr__(self) -> str:
        return f"MLPForecaster(window={self.window}, {self.mlp!r})"


class LinearForecaster(_WindowForecaster):
    """Linear baseline on the networks' inputs: one Dense layer over the flattened window and the future.

    ŷ = [flatten(x), future] Wᵀ + b, x (B, T, I) with T = ``window``, future (B, F) when F > 0.
    The honest baseline for the networks: it sees exactly what they see, covariates included.

    Parameters
    ----------
    window : int, the window length T
    input_size, output_size, future_size : as :class:`RecurrentForecaster`
    dtype, rng : as for the layers (``torch.nn.Linear``'s initialisation)

    Parameter keys: ``dense.W`` (O, T·I + F), ``dense.b`` (O,). No state, no saturation (nan).
    """

    kind = "linear"

    def __init__(self, window: int, input_size: int = 1, output_size: int = 1, future_size: int = 0, *,
                 dtype=np.float64, rng=None):
        self.dtype = as_dtype(dtype)
        width = self._init_input(window, input_size, future_size)
        self.dense = Dense(width, output_size, dtype=self.dtype, rng=as_generator(rng))
        self._net = self.dense
        self.config = {"kind": "linear", "window": self.window, "input_size": self.input_size,
                       "output_size": int(output_size), "dtype": self.dtype.name}
        if self.future_size:
            self.config["future_size"] = self.future_size

    def children(self) -> dict[str, Module]:
        return {"dense": self.dense}

    def saturation(self, state: tuple = ()) -> float:
        """nan: a linear model has no tanh units."""
        return float("nan")

    @staticmethod
    def multiply_adds(kind: str, window: int, hidden_size=None, input_size: int = 1, output_size: int = 1,
                      future_size: int = 0) -> int:
        """Multiply-adds of one forward + backward pass over one window (``hidden_size`` is ignored)."""
        return 3 * output_size * (window * input_size + future_size)

    def __repr__(self) -> str:
        return f"LinearForecaster(window={self.window}, {self.dense!r})"


@dataclass(frozen=True)
class ModelKind:
    """One entry of :data:`MODELS`: how to build a kind and what it costs.

    ``build(hidden_size, window=None, input_size=1, output_size=1, future_size=0, *, dtype, rng, backend)``:
    every kind takes the same keywords; a recurrent model reads any window length (``window``
    unused), the MLP and the linear model have no recurrent kernel (``backend`` unused), the
    linear model has no hidden layer (``hidden_size`` accepted and ignored).
    """

    build: Callable[..., Module]
    multiply_adds: Callable[..., int]   # (kind, window, hidden_size, input_size, output_size, future_size)
    stateful: bool

    def __call__(self, **config) -> Module:
        return self.build(**config)


def _recurrent(kind: str):
    def build(hidden_size: int = 24, window: int | None = None, input_size: int = 1, output_size: int = 1,
              future_size: int = 0, *, dtype=np.float64, rng=None, backend: str = "auto", **kw):
        if kw:
            raise ValueError(f"unexpected parameters for model kind {kind!r}: {sorted(kw)}")
        return RecurrentForecaster(kind, hidden_size, input_size, output_size, future_size, dtype=dtype, rng=rng,
                                   backend=backend)
    return ModelKind(build, RecurrentForecaster.multiply_adds, stateful=True)


def _mlp(hidden_size=24, window: int | None = None, input_size: int = 1, output_size: int = 1,
         future_size: int = 0, activation: str = "tanh", *, dtype=np.float64, rng=None,
         backend: str = "auto") -> MLPForecaster:
    if window is None:
        raise ValueError("model kind 'mlp' needs the window length (window=...)")
    return MLPForecaster(window, hidden_size, input_size, output_size, activation, future_size, dtype=dtype, rng=rng)


def _linear(hidden_size=None, window: int | None = None, input_size: int = 1, output_size: int = 1,
            future_size: int = 0, *, dtype=np.float64, rng=None, backend: str = "auto") -> LinearForecaster:
    """``hidden_size`` and ``backend`` are accepted like every kind's, and ignored: no hidden layer, no kernel."""
    if window is None:
        raise ValueError("model kind 'linear' needs the window length (window=...)")
    return LinearForecaster(window, input_size, output_size, future_size, dtype=dtype, rng=rng)


#: model kind -> :class:`ModelKind`; ``MODELS[kind](**config)`` builds one.
MODELS = {
    "rnn": _recurrent("rnn"),
    "gru": _recurrent("gru"),
    "lstm": _recurrent("lstm"),
    "mlp": ModelKind(_mlp, MLPForecaster.multiply_adds, stateful=False),
    "linear": ModelKind(_linear, LinearForecaster.multiply_adds, stateful=False),
}


def build_model(kind: str, *, rng=None, **config):
    """Build a forecaster from its ``config`` dict (``build_model(**model.config)`` round-trips)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(MODELS)}")
    return MODELS[kind](rng=rng, **config)
