"""Progress bars in the Prefect UI (progress artifacts): a training's epochs, a sweep's configurations, a
backfill's nights. Outside a flow or task run (a unit test calling ``task.fn``) they do nothing."""
from __future__ import annotations

import logging

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext

log = logging.getLogger("nnforecast")


class Progress:
    """One progress artifact: ``update(done)`` moves it to ``done / total``."""

    def __init__(self, key: str, total: int, description: str):
        self.total, self.description, self.id = max(total, 1), description, None
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        self.id = create_progress_artifact(0.0, key=key, description=f"{description}: 0 of {total}")

    def update(self, done: int, note: str = "") -> None:
        if self.id is None:
            return
        update_progress_artifact(self.id, round(100.0 * min(done, self.total) / self.total, 1),
                                 description=f"{self.description}: {done} of {self.total}{note}")

    def finish(self, note: str) -> None:
        """Done (possibly before ``total``: a training that stopped early): the bar full, ``note`` says how."""
        if self.id is not None:
            update_progress_artifact(self.id, 100.0, description=f"{self.description}: {note}")
