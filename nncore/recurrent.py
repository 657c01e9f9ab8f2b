"""Recurrent layers: tanh RNN, GRU and LSTM with backpropagation through time.

Shapes. Public sequences are batch-first: ``x`` is ``(B, T, I)``, ``out`` is ``(B, T, H)``,
states are ``(B, H)``. Internally every pass converts once to time-major ``(T, B, ·)`` so a time
step is a contiguous slab; the cache stores the states time-major with the initial state
first, ``hs[0] = h0`` and ``hs[t + 1] = h_t``, and ``out`` is a batch-first view of ``hs[1:]``.

Weights use PyTorch's layout and gate order, so state dicts move both ways
(:mod:`nncore.torch_io`): ``W_ih`` is ``(G·H, I)``, ``W_hh`` ``(G·H, H)``, biases ``(G·H,)``
with G = 1 (RNN), 3 (GRU: r, z, n) or 4 (LSTM: i, f, g, o).

Two levels. The pure functions ``rnn_forward``/``rnn_backward`` (and the GRU/LSTM pairs) take
arrays and return arrays plus a cache; the layer classes own ``params``/``grads`` and the last
cache, and dispatch to a backend. The compiled kernels take the same arguments and return the
same arrays as these NumPy references.

``backward(dout, dh_T)`` accepts ``dout=None``: a forecaster's loss touches only the last state,
so there is no need to build and read an all-zero ``(B, T, H)`` array.
"""
from __future__ import annotations

import importlib
import math

import numpy as np

from ._utils import as_generator, check_array, uniform
from .activations import sigmoid
from .layers import Layer


def _time_major(x: np.ndarray) -> np.ndarray:
    """(B, T, F) -> contiguous (T, B, F)."""
    return np.ascontiguousarray(x.transpose(1, 0, 2))


def _initial(state, B: int, H: int, dtype, name: str) -> np.ndarray:
    if state is None:
        return np.zeros((B, H), dtype=dtype)
    state = check_array(state, dtype, 2, name, H)
    if state.shape[0] != B:
        raise ValueError(f"{name} has batch size {state.shape[0]}, expected {B} (shape {state.shape})")
    return state


# --------------------------------------------------------------------------------------------
# tanh RNN
# --------------------------------------------------------------------------------------------
def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    """Forward pass of the tanh RNN over a whole sequence.

    h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)

    Parameters
    ----------
    x : (B, T, I) array;  h0 : (B, H) array or None (zeros)
    W_ih : (H, I), W_hh : (H, H), b_ih, b_hh : (H,)

    Returns
    -------
    out : (B, T, H) batch-first view of the hidden states h_1..h_T
    h_T : (B, H) last hidden state
    cache : dict with ``x`` (T, B, I) and ``hs`` (T + 1, B, H), time-major
    """
    B, T, I = x.shape
    H = W_hh.shape[0]
    h0 = _initial(h0, B, H, W_hh.dtype, "h0")
    x_tm = _time_major(x)
    # All input projections at once: (T·B, I) @ (I, H), both biases folded in.
    xw = (x_tm.reshape(T * B, I) @ W_ih.T).reshape(T, B, H) + (b_ih + b_hh)
    hs = np.empty((T + 1, B, H), dtype=W_hh.dtype)
    hs[0] = h0
    W_hh_T = W_hh.T
    for t in range(T):
        np.tanh(xw[t] + hs[t] @ W_hh_T, out=hs[t + 1])
    return hs[1:].transpose(1, 0, 2), hs[T].copy(), {"x": x_tm, "hs": hs}


def rnn_backward(dout, dh_T, cache, W_ih, W_hh):
    """Backpropagation through time for :func:`rnn_forward`.

    Parameters
    ----------
    dout : (B, T, H) gradient w.r.t. ``out``, or None (no loss on the intermediate states)
    dh_T : (B, H) gradient w.r.t. the last state, or None
    cache : from :func:`rnn_forward`

    Returns
    -------
    dx : (B, T, I);  dh0 : (B, H);  grads : dict ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh``
    """
    x_tm, hs = cache["x"], cache["hs"]
    T, B, I = x_tm.shape
    H = hs.shape[2]
    dout_tm = None if dout is None else dout.transpose(1, 0, 2)
    dh_next = np.zeros((B, H), dtype=hs.dtype) if dh_T is None else np.array(dh_T, dtype=hs.dtype)
    das = np.empty((T, B, H), dtype=hs.dtype)  # gradient w.r.t. the pre-activations a_t
    for t in range(T - 1, -1, -1):
        dh = dh_next if dout_tm is None else dh_next + dout_tm[t]
        h = hs[t + 1]
        da = das[t]
        np.multiply(dh, 1 - h * h, out=da)  # tanh' from the saved output
        dh_next = da @ W_hh
    das2 = das.reshape(T * B, H)
    db = das2.sum(axis=0)
    grads = {
        "W_ih": das2.T @ x_tm.reshape(T * B, I),
        "W_hh": das2.T @ hs[:-1].reshape(T * B, H),
        "b_ih": db,
        "b_hh": db.copy(),
    }
    dx = (das2 @ W_ih).reshape(T, B, I).transpose(1, 0, 2)
    return dx, dh_next, grads


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------
def gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    """Forward pass of the GRU (PyTorch's formulation and gate order r, z, n).

    r_t = σ(x_t W_irᵀ + b_ir + h_{t-1} W_hrᵀ + b_hr)
    z_t = σ(x_t W_izᵀ + b_iz + h_{t-1} W_hzᵀ + b_hz)
    n_t = tanh(x_t W_inᵀ + b_in + r_t ⊙ (h_{t-1} W_hnᵀ + b_hn))
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    Shapes as :func:`rnn_forward` with ``W_ih`` (3H, I), ``W_hh`` (3H, H), biases (3H,).
    The cache holds ``x``, ``hs`` and the gates ``r``, ``z``, ``n`` and ``hn`` = h_{t-1} W_hnᵀ + b_hn,
    each (T, B, H).
    """
    B, T, I = x.shape
    H = W_hh.shape[1]
    h0 = _initial(h0, B, H, W_hh.dtype, "h0")
    x_tm = _time_major(x)
    gi = (x_tm.reshape(T * B, I) @ W_ih.T).reshape(T, B, 3 * H) + b_ih
    hs = np.empty((T + 1, B, H), dtype=W_hh.dtype)
    hs[0] = h0
    r, z, n, hn = (np.empty((T, B, H), dtype=W_hh.dtype) for _ in range(4))
    W_hh_T = W_hh.T
    for t in range(T):
        h = hs[t]
        gh = h @ W_hh_T + b_hh
        r[t] = sigmoid(gi[t, :, :H] + gh[:, :H])
        z[t] = sigmoid(gi[t, :, H:2 * H] + gh[:, H:2 * H])
        hn[t] = gh[:, 2 * H:]
        n[t] = np.tanh(gi[t, :, 2 * H:] + r[t] * hn[t])
        hs[t + 1] = n[t] + z[t] * (h - n[t])
    cache = {"x": x_tm, "hs": hs, "r": r, "z": z, "n": n, "hn": hn}
    return hs[1:].transpose(1, 0, 2), hs[T].copy(), cache


def gru_backward(dout, dh_T, cache, W_ih, W_hh):
    """Backpropagation through time for :func:`gru_forward`; returns ``dx, dh0, grads``."""
    x_tm, hs = cache["x"], cache["hs"]
    r, z, n, hn = cache["r"], cache["z"], cache["n"], cache["hn"]
    T, B, I = x_tm.shape
    H = hs.shape[2]
    dout_tm = None if dout is None else dout.transpose(1, 0, 2)
    dh_next = np.zeros((B, H), dtype=hs.dtype) if dh_T is None else np.array(dh_T, dtype=hs.dtype)
    dgi = np.empty((T, B, 3 * H), dtype=hs.dtype)  # gradient w.r.t. x_t W_ihᵀ + b_ih
    dgh = np.empty((T, B, 3 * H), dtype=hs.dtype)  # gradient w.r.t. h_{t-1} W_hhᵀ + b_hh
    for t in range(T - 1, -1, -1):
        dh = dh_next if dout_tm is None else dh_next + dout_tm[t]
        h_prev, rt, zt, nt = hs[t], r[t], z[t], n[t]
        dan = dh * (1 - zt) * (1 - nt * nt)
        dar = dan * hn[t] * rt * (1 - rt)
        daz = dh * (h_prev - nt) * zt * (1 - zt)
        dgi[t, :, :H] = dar
        dgi[t, :, H:2 * H] = daz
        dgi[t, :, 2 * H:] = dan
        dgh[t, :, :H] = dar
        dgh[t, :, H:2 * H] = daz
        dgh[t, :, 2 * H:] = dan * rt
        dh_next = dh * zt + dgh[t] @ W_hh
    dgi2 = dgi.reshape(T * B, 3 * H)
    dgh2 = dgh.reshape(T * B, 3 * H)
    grads = {
        "W_ih": dgi2.T @ x_tm.reshape(T * B, I),
        "W_hh": dgh2.T @ hs[:-1].reshape(T * B, H),
        "b_ih": dgi2.sum(axis=0),
        "b_hh": dgh2.sum(axis=0),
    }
    dx = (dgi2 @ W_ih).reshape(T, B, I).transpose(1, 0, 2)
    return dx, dh_next, grads


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------
def lstm_forward(x, state, W_ih, W_hh, b_ih, b_hh):
    """Forward pass of the LSTM (PyTorch's formulation and gate order i, f, g, o).

    [i, f, g, o]_t = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh, then σ, σ, tanh, σ
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

    ``state`` is ``(h0, c0)`` or None; ``W_ih`` (4H, I), ``W_hh`` (4H, H), biases (4H,).
    Returns ``out`` (B, T, H), ``(h_T, c_T)`` and a cache with ``x``, ``hs``, ``cs`` (T + 1, B, H),
    the activated gates ``gates`` (T, B, 4H) and ``tc`` = tanh(c_t) (T, B, H).
    """
    B, T, I = x.shape
    H = W_hh.shape[1]
    h0, c0 = (None, None) if state is None else state
    h0 = _initial(h0, B, H, W_hh.dtype, "h0")
    c0 = _initial(c0, B, H, W_hh.dtype, "c0")
    x_tm = _time_major(x)
    gates = (x_tm.reshape(T * B, I) @ W_ih.T).reshape(T, B, 4 * H) + (b_ih + b_hh)
    hs = np.empty((T + 1, B, H), dtype=W_hh.dtype)
    cs = np.empty((T + 1, B, H), dtype=W_hh.dtype)
    tc = np.empty((T, B, H), dtype=W_hh.dtype)
    hs[0], cs[0] = h0, c0
    W_hh_T = W_hh.T
    for t in range(T):
        g = gates[t]
        g += hs[t] @ W_hh_T
        g[:, :2 * H] = sigmoid(g[:, :2 * H])
        np.tanh(g[:, 2 * H:3 * H], out=g[:, 2 * H:3 * H])
        g[:, 3 * H:] = sigmoid(g[:, 3 * H:])
        cs[t + 1] = g[:, H:2 * H] * cs[t] + g[:, :H] * g[:, 2 * H:3 * H]
        np.tanh(cs[t + 1], out=tc[t])
        hs[t + 1] = g[:, 3 * H:] * tc[t]
    cache = {"x": x_tm, "hs": hs, "cs": cs, "gates": gates, "tc": tc}
    return hs[1:].transpose(1, 0, 2), (hs[T].copy(), cs[T].copy()), cache


def lstm_backward(dout, dstate, cache, W_ih, W_hh):
    """Backpropagation through time for :func:`lstm_forward`.

    ``dstate`` is ``(dh_T, dc_T)`` (either may be None) or None. Returns ``dx``,
    ``(dh0, dc0)`` and the parameter gradients.
    """
    x_tm, hs, cs, gates, tc = cache["x"], cache["hs"], cache["cs"], cache["gates"], cache["tc"]
    T, B, I = x_tm.shape
    H = hs.shape[2]
    dh_T, dc_T = (None, None) if dstate is None else dstate
    dout_tm = None if dout is None else dout.transpose(1, 0, 2)
    dh_next = np.zeros((B, H), dtype=hs.dtype) if dh_T is None else np.array(dh_T, dtype=hs.dtype)
    dc_next = np.zeros((B, H), dtype=hs.dtype) if dc_T is None else np.array(dc_T, dtype=hs.dtype)
    das = np.empty((T, B, 4 * H), dtype=hs.dtype)  # gradient w.r.t. the gate pre-activations
    for t in range(T - 1, -1, -1):
        dh = dh_next if dout_tm is None else dh_next + dout_tm[t]
        g = gates[t]
        i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        tct = tc[t]
        dc = dc_next + dh * o * (1 - tct * tct)
        da = das[t]
        da[:, :H] = dc * gg * i * (1 - i)
        da[:, H:2 * H] = dc * cs[t] * f * (1 - f)
        da[:, 2 * H:3 * H] = dc * i * (1 - gg * gg)
        da[:, 3 * H:] = dh * tct * o * (1 - o)
        dc_next = dc * f
        dh_next = da @ W_hh
    das2 = das.reshape(T * B, 4 * H)
    db = das2.sum(axis=0)
    grads = {
        "W_ih": das2.T @ x_tm.reshape(T * B, I),
        "W_hh": das2.T @ hs[:-1].reshape(T * B, H),
        "b_ih": db,
        "b_hh": db.copy(),
    }
    dx = (das2 @ W_ih).reshape(T, B, I).transpose(1, 0, 2)
    return dx, (dh_next, dc_next), grads


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------
BACKENDS = ("auto", "numpy", "cython")
_NUMPY = {
    "rnn": (rnn_forward, rnn_backward),
    "gru": (gru_forward, gru_backward),
    "lstm": (lstm_forward, lstm_backward),
}


def _kernels():
    """The compiled ``kernels`` package, or the reason it cannot be used."""
    try:
        return importlib.import_module("kernels"), None
    except ImportError as e:  # the package itself is missing (nncore installed without it)
        return None, e


def kernel_available(kind: str) -> bool:
    """True when the compiled kernel for ``kind`` ('rnn', 'gru', 'lstm') is built and importable."""
    mod, _ = _kernels()
    return bool(mod is not None and mod.KERNELS.get(kind, False))


def _backend_functions(kind: str, backend: str):
    """(name, forward, backward) for ``backend``; 'auto' prefers the compiled kernel."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend == "numpy" or (backend == "auto" and not kernel_available(kind)):
        return ("numpy", *_NUMPY[kind])
    mod, err = _kernels()
    if mod is None or not mod.KERNELS.get(kind, False):
        reason = err or (mod.import_error() if mod is not None and not mod.available() else None)
        detail = f" ({reason})" if reason else " (this kind has no compiled kernel)"
        raise ValueError(f"backend='cython' requested for {kind}, but the compiled kernel is not available{detail}; "
                         f"build it with `pip install .` (needs Cython and a C compiler) or use backend='numpy'")
    return ("cython", getattr(mod, f"{kind}_forward"), getattr(mod, f"{kind}_backward"))


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
class _Recurrent(Layer):
    """Shared constructor, checks, backend dispatch and gradient accumulation of the recurrent layers.

    ``backend``: ``"auto"`` (the compiled kernel when it is built, else NumPy), ``"numpy"`` (the
    reference functions of this module) or ``"cython"`` (the kernel; an error when not built).
    The backend in use is the attribute ``backend``; :meth:`set_backend` changes it.
    """

    gates = 1
    kind = ""

    def __init__(self, input_size: int, hidden_size: int, *, dtype=np.float64, rng=None, backend: str = "auto"):
        super().__init__(dtype)
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"{type(self).__name__} sizes must be >= 1, got input_size={input_size}, hidden_size={hidden_size}"
            )
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        rng = as_generator(rng)
        G, H, I = self.gates, self.hidden_size, self.input_size
        bound = 1 / math.sqrt(H)  # PyTorch: every recurrent parameter ~ U(-1/√H, 1/√H)
        self._add_param("W_ih", uniform(rng, bound, (G * H, I), self.dtype))
        self._add_param("W_hh", uniform(rng, bound, (G * H, H), self.dtype))
        self._add_param("b_ih", uniform(rng, bound, (G * H,), self.dtype))
        self._add_param("b_hh", uniform(rng, bound, (G * H,), self.dtype))
        self._cache: dict | None = None
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        """Switch between ``"auto"``, ``"numpy"`` and ``"cython"`` (drops the cached forward pass)."""
        self.backend, self._forward_fn, self._backward_fn = _backend_functions(self.kind, backend)
        self._cache = None

    @property
    def fused_train_step(self):
        """The compiled fused step (layer + dense head on the last state + MSE), or None on NumPy.

        ``step(x, y, state, W_ih, W_hh, b_ih, b_hh, W_out, b_out) -> (loss, state_T, grads)``.
        """
        if self.backend != "cython":
            return None
        return getattr(_kernels()[0], f"{self.kind}_train_step", None)

    def predict(self, x, state=None, W_out=None, b_out=None):
        """Inference: ``(ŷ, state_T)`` with ŷ = h_T W_outᵀ + b_out (None without ``W_out``) and ``state_T``
        as :meth:`forward` returns it; no cache is kept, so no :meth:`backward` follows.

        On the compiled backend one call of the inference kernel (the forward through two state slots per
        batch tile instead of the whole sequence, the head fused); on NumPy the reference forward.
        """
        x = self._check_x(x, remember=False)  # a backward still belongs to the last forward
        state = self._initial_state(state, x.shape[0])
        p = self.params
        if self.backend == "cython":
            return getattr(_kernels()[0], f"{self.kind}_predict")(x, state, p["W_ih"], p["W_hh"], p["b_ih"],
                                                                  p["b_hh"], W_out, b_out)
        _, state_T, _ = _NUMPY[self.kind][0](x, state, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
        h_T = state_T[0] if isinstance(state_T, tuple) else state_T
        return (None if W_out is None else h_T @ W_out.T + b_out), state_T

    def _check_x(self, x, remember: bool = True) -> np.ndarray:
        """``x`` checked; ``remember``: its (B, T) is the next backward's (False for inference)."""
        x = check_array(x, self.dtype, 3, f"{type(self).__name__} input x (B, T, I)", self.input_size)
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"{type(self).__name__} input must have B >= 1 and T >= 1, got shape {x.shape}")
        if remember:
            self._batch_time = x.shape[:2]
        return x

    def _check_grad(self, d, name: str, shape) -> np.ndarray | None:
        if d is None:
            return None
        d = check_array(d, self.dtype, len(shape), name)
        if d.shape != shape:
            raise ValueError(f"{name} has shape {d.shape}, expected {shape}")
        return d

    def _accumulate(self, grads: dict[str, np.ndarray]) -> None:
        for k, g in grads.items():
            self.grads[k] += g

    def _last_shape(self) -> tuple[int, int, int]:
        """(B, T, H) of the last forward pass, whose cache ``backward`` consumes."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return (*self._batch_time, self.hidden_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}, dtype={self.dtype})"


class _SingleState(_Recurrent):
    """Layers whose state is one array h (RNN, GRU): ``forward(x, h0)``, ``backward(dout, dh_T)``.

    The state adapters below give every layer one tuple convention for the forecasters: the
    state is ``(h,)`` here and ``(h, c)`` for the LSTM, its first element the hidden state.
    """

    @staticmethod
    def pack_state(state) -> tuple:
        """The layer's state as the tuple ``(h,)``."""
        return (state,)

    @staticmethod
    def unpack_state(state: tuple | None):
        """The tuple convention back to this layer's ``h0`` argument."""
        if state is None:
            return None
        if not (isinstance(state, (tuple, list)) and len(state) == 1):
            raise ValueError(f"state must be the tuple (h,), got {type(state).__name__} of length {len(state)}")
        return state[0]

    @staticmethod
    def last_state_grad(dh_T):
        """``backward``'s gradient argument for a gradient on h_T alone."""
        return dh_T

    @staticmethod
    def tanh_units(state: tuple) -> np.ndarray:
        """The tanh outputs behind the last hidden state (the saturation probe): h_T itself."""
        return state[0]

    def _initial_state(self, h0, B: int):
        return None if h0 is None else _initial(h0, B, self.hidden_size, self.dtype, "h0")

    def forward(self, x, h0=None):
        x = self._check_x(x)
        h0 = self._initial_state(h0, x.shape[0])
        p = self.params
        out, h_T, self._cache = self._forward_fn(x, h0, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
        return out, h_T

    def backward(self, dout=None, dh_T=None):
        B, T, H = self._last_shape()
        dout = self._check_grad(dout, "dout", (B, T, H))
        dh_T = self._check_grad(dh_T, "dh_T", (B, H))
        dx, self.dh0, grads = self._backward_fn(dout, dh_T, self._cache, self.params["W_ih"], self.params["W_hh"])
        self._accumulate(grads)
        return dx


class RNN(_SingleState):
    """Single-layer tanh RNN, batch-first.

    Equations::

        h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)

    Parameters: ``W_ih`` (H, I), ``W_hh`` (H, H), ``b_ih`` (H,), ``b_hh`` (H,).
    ``forward(x, h0=None)`` with x (B, T, I) returns ``(out, h_T)``, out (B, T, H);
    ``backward(dout, dh_T=None)`` returns dx (B, T, I), adds into ``grads`` and sets ``dh0``.
    """

    gates = 1
    kind = "rnn"


class GRU(_SingleState):
    """Single-layer GRU, batch-first, PyTorch's equations and gate order (r, z, n).

    Equations::

        r_t = σ(x_t W_irᵀ + b_ir + h_{t-1} W_hrᵀ + b_hr)
        z_t = σ(x_t W_izᵀ + b_iz + h_{t-1} W_hzᵀ + b_hz)
        n_t = tanh(x_t W_inᵀ + b_in + r_t ⊙ (h_{t-1} W_hnᵀ + b_hn))
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    Parameters: ``W_ih`` (3H, I), ``W_hh`` (3H, H), ``b_ih`` (3H,), ``b_hh`` (3H,).
    Same API as :class:`RNN`.
    """

    gates = 3
    kind = "gru"


class LSTM(_Recurrent):
    """Single-layer LSTM, batch-first, PyTorch's equations and gate order (i, f, g, o).

    Equations::

        i_t = σ(x_t W_iiᵀ + b_ii + h_{t-1} W_hiᵀ + b_hi)
        f_t = σ(x_t W_ifᵀ + b_if + h_{t-1} W_hfᵀ + b_hf)
        g_t = tanh(x_t W_igᵀ + b_ig + h_{t-1} W_hgᵀ + b_hg)
        o_t = σ(x_t W_ioᵀ + b_io + h_{t-1} W_hoᵀ + b_ho)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)

    Parameters: ``W_ih`` (4H, I), ``W_hh`` (4H, H), ``b_ih`` (4H,), ``b_hh`` (4H,).
    The state is the pair ``(h, c)``: ``forward(x, state=None)`` returns ``(out, (h_T, c_T))``;
    ``backward(dout, dstate=None)`` with ``dstate = (dh_T, dc_T)`` returns dx and sets
    ``dstate0 = (dh0, dc0)`` (``dh0`` is also set, as on the other layers).
    """

    gates = 4
    kind = "lstm"

    @staticmethod
    def pack_state(state) -> tuple:
        return tuple(state)

    @staticmethod
    def unpack_state(state: tuple | None):
        return state

    @staticmethod
    def last_state_grad(dh_T):
        return (dh_T, None)

    @staticmethod
    def tanh_units(state: tuple) -> np.ndarray:
        """h_T = o_T ⊙ tanh(c_T): the saturation probe is tanh(c_T)."""
        return np.tanh(state[1])

    def _initial_state(self, state, B: int):
        if state is None:
            return None
        if not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise ValueError("LSTM state must be a pair (h, c)")
        return (_initial(state[0], B, self.hidden_size, self.dtype, "h0"),
                _initial(state[1], B, self.hidden_size, self.dtype, "c0"))

    def forward(self, x, state=None):
        x = self._check_x(x)
        state = self._initial_state(state, x.shape[0])
        p = self.params
        out, state_T, self._cache = self._forward_fn(x, state, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
        return out, state_T

    def backward(self, dout=None, dstate=None):
        B, T, H = self._last_shape()
        dout = self._check_grad(dout, "dout", (B, T, H))
        if dstate is not None:
            if not (isinstance(dstate, (tuple, list)) and len(dstate) == 2):
                raise ValueError("LSTM dstate must be a pair (dh_T, dc_T)")
            dstate = (self._check_grad(dstate[0], "dh_T", (B, H)), self._check_grad(dstate[1], "dc_T", (B, H)))
        dx, self.dstate0, grads = self._backward_fn(dout, dstate, self._cache, self.params["W_ih"], self.params["W_hh"])
        self.dh0 = self.dstate0[0]
        self._accumulate(grads)
        return dx


#: kind name -> recurrent layer class
RECURRENT_LAYERS = {"rnn": RNN, "gru": GRU, "lstm": LSTM}
