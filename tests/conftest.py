"""Shared test helpers: a recording gradient checker and the worst error seen in the session."""
from __future__ import annotations

import numpy as np
import pytest

from nncore.gradcheck import numerical_gradient, relative_error

#: every gradient check of the session: (test id, array name, relative error)
GRADCHECKS: list[tuple[str, str, float]] = []
TOLERANCE = 1e-6


@pytest.fixture
def check_grad(request):
    """``check_grad(f, x, analytic, name)``: finite-difference ``f`` w.r.t. ``x`` and compare.

    Records the relative error so the session summary can report the worst one.
    """

    def check(f, x, analytic, name="", eps=1e-6):
        numeric = numerical_gradient(f, x, eps=eps)
        err = relative_error(analytic, numeric)
        GRADCHECKS.append((request.node.nodeid, name, err))
        assert err < TOLERANCE, f"{name}: relative error {err:.3e} >= {TOLERANCE:g}\nanalytic={analytic}\nnumeric={numeric}"
        return err

    return check


def pytest_terminal_summary(terminalreporter):
    if not GRADCHECKS:
        return
    worst = max(GRADCHECKS, key=lambda r: r[2])
    errors = np.array([r[2] for r in GRADCHECKS])
    terminalreporter.write_sep("-", "gradient checks")
    terminalreporter.write_line(
        f"{len(GRADCHECKS)} finite-difference checks, median relative error {np.median(errors):.2e}, "
        f"worst {worst[2]:.2e} ({worst[0]} :: {worst[1]}), tolerance {TOLERANCE:g}"
    )
