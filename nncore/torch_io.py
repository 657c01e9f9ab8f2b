"""Move weights between nncore modules and PyTorch state dicts, with plain NumPy arrays.

No torch import: a PyTorch user exports ``{k: v.numpy() for k, v in model.state_dict().items()}``
(or ``np.savez``), and nncore reads that. Names map as follows (single-layer recurrent modules,
suffix ``_l0``)::

    nncore          PyTorch
    Dense.W         Linear.weight          (out, in)
    Dense.b         Linear.bias            (out,)
    RNN/GRU/LSTM.W_ih  weight_ih_l0        (G·H, I)
    RNN/GRU/LSTM.W_hh  weight_hh_l0        (G·H, H)
    RNN/GRU/LSTM.b_ih  bias_ih_l0          (G·H,)
    RNN/GRU/LSTM.b_hh  bias_hh_l0          (G·H,)

Gate order is PyTorch's already (GRU r, z, n; LSTM i, f, g, o), so no array is reordered.
Module paths map through ``module_names``: a :class:`~nncore.models.RecurrentForecaster` keeps
its layers as ``rnn`` and ``head``; a notebook model with ``self.lstm`` and ``self.fc`` is read
with ``module_names={"rnn": "lstm", "head": "fc"}``. When ``module_names`` is omitted on
loading, the names are detected: the prefix of ``*.weight_ih_l0`` is the recurrent layer and the
one remaining ``*.weight`` is the head. A :class:`~nncore.network.Sequential` needs no mapping:
both number their children by position (``0.W`` ↔ ``0.weight``).
"""
from __future__ import annotations

import numpy as np

from .layers import Module

_LEAF = {
    "W": "weight", "b": "bias",
    "W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0", "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0",
}
_LEAF_INV = {v: k for k, v in _LEAF.items()}


def _split(key: str) -> tuple[str, str]:
    path, _, leaf = key.rpartition(".")
    return path, leaf


def _detect_names(module: Module, state: dict) -> dict[str, str]:
    """Guess {our child name: torch prefix} for a forecaster from the torch keys."""
    children = module.children()
    if set(children) != {"rnn", "head"}:
        return {}
    recurrent = {_split(k)[0] for k in state if _split(k)[1] == "weight_ih_l0"}
    linear = {_split(k)[0] for k in state if _split(k)[1] == "weight"}
    if len(recurrent) != 1 or len(linear) != 1:
        raise ValueError(
            f"cannot tell the recurrent layer and the head apart in keys {sorted(state)}; pass module_names="
            "{'rnn': <recurrent prefix>, 'head': <linear prefix>}"
        )
    return {"rnn": recurrent.pop(), "head": linear.pop()}


def _torch_key(key: str, module_names: dict[str, str]) -> str:
    path, leaf = _split(key)
    if leaf not in _LEAF:
        raise ValueError(f"parameter {key!r} has no PyTorch name")
    parts = path.split(".") if path else []
    if parts and parts[0] in module_names:
        parts[0] = module_names[parts[0]]
    return ".".join([p for p in parts if p] + [_LEAF[leaf]])


def to_torch_state_dict(module, module_names: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Copies of a module's parameters under PyTorch state-dict names (NumPy arrays).

    ``module`` may also be a dict keyed like ``params`` (e.g. ``model.grads``, to compare gradients).
    """
    names = module_names or {}
    arrays = module if isinstance(module, dict) else module.params
    return {_torch_key(k, names): np.array(v, copy=True) for k, v in arrays.items()}


def load_torch_state_dict(module: Module, state: dict, module_names: dict[str, str] | None = None) -> None:
    """Load a PyTorch state dict (values: NumPy arrays or anything ``np.asarray`` accepts) into ``module``.

    Keys that PyTorch adds for bookkeeping only (``*.num_batches_tracked``) are ignored; every
    other key must map to a parameter and every parameter must be present with the same shape.
    Values are converted to the module's dtype.
    """
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    names = module_names if module_names is not None else _detect_names(module, state)
    ours = {_torch_key(k, names): k for k in module.params}
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    if missing or unexpected:
        raise ValueError(f"PyTorch state dict does not match: missing {missing}, unexpected {unexpected}")
    module.load_state_dict({ours[k]: np.asarray(v, dtype=module.dtype) for k, v in state.items()})
