"""Regularisation, added to the loss *and* to the gradients in one place: :class:`Regularization`.

Three terms on the weights (parameters whose name starts with ``W``; biases are not penalised):

* L1: ``l1 · Σ|w|`` with subgradient ``l1 · sign(w)`` (0 at w = 0);
* L2 weight decay: ``l2/2 · Σ w²`` with gradient ``l2 · w`` (PyTorch's ``weight_decay = l2``);
* the gradient-norm penalty of eq. 1.3, ``λ ‖∇_w ŷ‖²``: the squared norm of the gradient of the
  prediction with respect to every weight, summed over output units and averaged over the batch.
  Its gradient needs second derivatives (double backpropagation); it is implemented exactly for
  networks of Dense layers and elementwise activations (:class:`~nncore.network.Sequential`,
  :class:`~nncore.models.MLPForecaster`).

:func:`objective` does forward, loss, backward and regularisation for one batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activations import get_activation
from .layers import Activation, Dense, Module
from .losses import get_loss
from .models import MLPForecaster
from .network import Sequential


def is_weight(name: str) -> bool:
    """Parameter keys ending in ``W``, ``W_ih``, ``W_hh``… are weights; ``b…`` are biases."""
    return name.rsplit(".", 1)[-1].startswith("W")


def _dense_stack(model: Module) -> list[tuple[Dense, object]]:
    """Flatten a Dense network into [(dense, activation_fn), …]; identity where none follows."""
    if isinstance(model, MLPForecaster):
        model = model.mlp
    if not isinstance(model, Sequential):
        raise ValueError(
            f"the gradient-norm penalty supports Dense networks (Sequential, MLPForecaster), not {type(model).__name__}"
        )
    identity = get_activation("identity")
    stack: list[list] = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            stack.append([layer, identity])
        elif isinstance(layer, Activation) and stack and stack[-1][1] is identity:
            stack[-1][1] = layer.fn
        else:
            raise ValueError(f"the gradient-norm penalty needs Dense layers each followed by at most one activation; "
                             f"got {model!r}")
    return [tuple(s) for s in stack]


def gradient_norm_penalty(model: Module, x: np.ndarray, lam: float, accumulate: bool = True,
                          future: np.ndarray | None = None) -> float:
    """λ · mean over the batch of Σ_k ‖∂ŷ_k/∂w‖² for a Dense network, and its exact gradient.

    For one sample and one output unit k, ∂ŷ_k/∂W_l = δ_l a_{l-1}ᵀ with δ_l = ∂ŷ_k/∂z_l, so
    ‖∂ŷ_k/∂W_l‖²_F = ‖δ_l‖² ‖a_{l-1}‖² and the penalty is λ/B Σ_b Σ_k Σ_l ‖δ_l‖² ‖a_{l-1}‖².
    The gradient differentiates that expression, including the backward recursion
    δ_l = (δ_{l+1} W_{l+1}) ⊙ f_l'(z_l), in reverse (double backpropagation); it needs f''.

    Parameters
    ----------
    model : Sequential or MLPForecaster; x : model input, (B, F) or (B, T, I) for the forecaster
    lam : λ ≥ 0;  accumulate : add the gradient into ``model.grads``
    future : the forecaster's future inputs (B, F), when it was built with ``future_size`` F > 0

    Returns the penalty value.
    """
    if isinstance(model, MLPForecaster):
        x = model.flat_input(x, future)  # the MLP's own input, [flatten(x), future]
    elif future is not None:
        raise ValueError(f"future inputs are only read by forecasters, not by {type(model).__name__}")
    stack = _dense_stack(model)
    B = x.shape[0]
    c = lam / B
    # Forward: a[0] = x, z_l = a_{l-1} W_lᵀ + b_l, a_l = f_l(z_l); s_l = f_l'(z_l), q_l = f_l''(z_l).
    a, s, q = [x], [], []
    for dense, fn in stack:
        z = a[-1] @ dense.params["W"].T + dense.params["b"]
        out = fn.f(z)
        a.append(out)
        s.append(fn.df(z, out))
        q.append(fn.d2f(z, out))
    L = len(stack)
    Ws = [dense.params["W"] for dense, _ in stack]
    dW = [np.zeros_like(W) for W in Ws]
    db = [np.zeros_like(dense.params["b"]) for dense, _ in stack]
    m = [np.einsum("bi,bi->b", a[l], a[l]) for l in range(L)]  # ‖a_{l}‖², the input norms of layer l+1
    total = 0.0
    for k in range(Ws[-1].shape[0]):
        # Backward for ŷ_k: g_L = e_k, δ_l = g_l ⊙ s_l, g_{l-1} = δ_l W_l.
        g = [None] * (L + 1)
        delta = [None] * L
        g[L] = np.zeros_like(a[L])
        g[L][:, k] = 1
        for l in range(L - 1, -1, -1):
            delta[l] = g[l + 1] * s[l]
            g[l] = delta[l] @ Ws[l]
        n = [np.einsum("bi,bi->b", d, d) for d in delta]
        total += c * sum(float(n[l] @ m[l]) for l in range(L))
        if not accumulate:
            continue
        # Reverse through the backward recursion (bottom layer first): adjoints of δ_l and g_l.
        g_bar = np.zeros_like(g[0])
        z_bar = [None] * L
        for l in range(L):
            delta_bar = 2 * c * m[l][:, None] * delta[l] + g_bar @ Ws[l].T
            dW[l] += delta[l].T @ g_bar
            g_bar = delta_bar * s[l]           # adjoint of g_{l+1}
            z_bar[l] = delta_bar * g[l + 1] * q[l]  # through s_l = f'(z_l)
        # Reverse through the forward pass (top layer first), injecting ∂P/∂a_{l} = 2c n_l a_l.
        a_bar = np.zeros_like(a[L])
        for l in range(L - 1, -1, -1):
            zb = z_bar[l] + a_bar * s[l]
            dW[l] += zb.T @ a[l]
            db[l] += zb.sum(axis=0)
            a_bar = zb @ Ws[l] + 2 * c * n[l][:, None] * a[l]
    if accumulate:
        for (dense, _), gW, gb in zip(stack, dW, db):
            dense.grads["W"] += gW
            dense.grads["b"] += gb
    return total


@dataclass
class Regularization:
    """Penalties added to the loss and the gradients together; see the module docstring.

    ``reg(model, x, future=None)`` adds the penalty gradients into ``model.grads`` and returns the
    penalty value to add to the loss. ``x`` (the model input, with ``future`` for a forecaster built
    with future inputs) is needed only by ``grad_penalty``.
    """

    l1: float = 0.0
    l2: float = 0.0
    grad_penalty: float = 0.0

    def __post_init__(self):
        for name in ("l1", "l2", "grad_penalty"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"regularisation strength {name} must be a finite number >= 0, got {value}")

    def __call__(self, model: Module, x: np.ndarray | None = None, future: np.ndarray | None = None) -> float:
        penalty = 0.0
        if self.l1 or self.l2:
            grads = model.grads
            for key, w in model.params.items():
                if not is_weight(key):
                    continue
                if self.l1:
                    penalty += self.l1 * float(np.abs(w).sum())
                    grads[key] += self.l1 * np.sign(w)
                if self.l2:
                    penalty += 0.5 * self.l2 * float(np.vdot(w, w))
                    grads[key] += self.l2 * w
        if self.grad_penalty:
            if x is None:
                raise ValueError("the gradient-norm penalty needs the model input x")
            penalty += gradient_norm_penalty(model, x, self.grad_penalty, future=future)
        return penalty


def objective(model: Module, x: np.ndarray, y: np.ndarray, loss: str = "mse",
              regularization: Regularization | None = None, future: np.ndarray | None = None) -> tuple[float, float]:
    """Forward, loss, backward and regularisation for one batch; gradients are *added* to ``model.grads``.

    ``model`` is a forecaster (``future``: its future inputs (B, F) when built with ``future_size`` > 0)
    or a :class:`~nncore.network.Sequential`.

    Returns ``(total, data_loss)`` where total = data_loss + penalty. Call ``model.zero_grad()``
    before it (or use the optimizer's ``zero_grad``).
    """
    if hasattr(model, "loss_and_grad"):  # forecasters (fused kernel where available)
        data_loss, _ = model.loss_and_grad(x, y, loss, future=future)
    else:
        if future is not None:
            raise ValueError(f"future inputs are only read by forecasters, not by {type(model).__name__}")
        data_loss, dpred = get_loss(loss)(model.forward(x), y)
        model.backward(dpred)
    penalty = regularization(model, x, future) if regularization is not None else 0.0
    return data_loss + penalty, data_loss
