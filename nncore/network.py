"""Sequential container for multilayer perceptrons."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ._utils import as_dtype, as_generator
from .layers import Activation, Dense, Layer, Module


class Sequential(Module):
    """Layers applied in order; ``backward`` runs them in reverse.

    Children are named by position (``"0"``, ``"1"``, …), so parameter keys are ``"0.W"``,
    ``"0.b"``, ``"2.W"``, … — the same numbering as a ``torch.nn.Sequential`` built from the same
    Linear and activation modules, whose state-dict keys are ``"0.weight"``, ``"2.weight"``, ….
    """

    def __init__(self, layers: Iterable[Layer]):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Sequential needs at least one layer")
        dtypes = {layer.dtype for layer in self.layers}
        if len(dtypes) != 1:
            raise ValueError(f"all layers of a Sequential must share one dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()

    def children(self) -> dict[str, Module]:
        return {str(i): layer for i, layer in enumerate(self.layers)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner})"


def mlp(
    sizes: Sequence[int],
    activation: str = "tanh",
    output_activation: str | None = None,
    *,
    dtype=np.float64,
    rng=None,
    **activation_kwargs,
) -> Sequential:
    """Build ``Dense(sizes[0], sizes[1]), act, …, Dense(sizes[-2], sizes[-1])[, output act]``.

    ``mlp([3, 4, 2])`` is the source text's 3→4→2 network (26 parameters).
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
    dtype = as_dtype(dtype)
    rng = as_generator(rng)
    layers: list[Layer] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(n_in, n_out, dtype=dtype, rng=rng))
        last = i == len(sizes) - 2
        act = output_activation if last else activation
        if act is not None and act != "identity":
            layers.append(Activation(act, dtype=dtype, **activation_kwargs))
    return Sequential(layers)
