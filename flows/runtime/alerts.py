"""Alerts through Prefect's own mechanisms: a notification block told when a night fails, events for the rest.

* :func:`on_failure` is a flow state hook (``@flow(on_failure=[alerts.on_failure])``). It loads the
  notification block named by the run's ``overrides["notify"]`` (else ``$NNFORECAST_NOTIFY_BLOCK``) as
  ``"block-type-slug/block-name"`` (e.g. ``"custom-webhook/nightly-alerts"``, created in the UI or with
  ``CustomWebhookNotificationBlock(...).save("nightly-alerts")``) and sends it the run's name, id, failure
  message and UI link. No block named: nothing is sent.
* :func:`emit` raises a Prefect event about a registered model (resource ``nnforecast.model.<name>``), e.g. a
  night that found no new data; automations in the UI can react to it. Emitted inside a flow run, Prefect
  relates the event to that run, its flow and deployment by itself.

Neither ever raises: an alert that cannot be sent is logged as a warning with the reason, and the night's own
outcome (its failure, its result) stays what is reported.

Sync and async: Prefect 3 (3.9) answers ``Block.load`` and ``notify`` with a coroutine whenever it thinks it runs
in an async context: inside an async flow's run context, or in a thread with a running event loop, which is where
the async engine calls a sync hook. :func:`_resolved` runs such a coroutine to completion on Prefect's own
run-sync loop thread, so the hook behaves the same under sync and async flows.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
from typing import Any

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.events import emit_event
from prefect.logging.loggers import flow_run_logger
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.utilities.urls import url_for

ENV_BLOCK = "NNFORECAST_NOTIFY_BLOCK"
log = logging.getLogger("nnforecast")


def notify_block_name(parameters: dict) -> str | None:
    """The notification block of a flow run: ``overrides["notify"]``, else ``$NNFORECAST_NOTIFY_BLOCK``, else None.

    Args:
        parameters: the flow run's parameters, ``{"preset": ..., "overrides": {...} or None}``.
    """
    overrides = parameters.get("overrides") or {}
    return overrides.get("notify") or os.environ.get(ENV_BLOCK) or None


def failure_message(flow_name: str, flow_run_name: str, flow_run_id: Any, state_message: str | None,
                    ui_url: str | None) -> tuple[str, str]:
    """The (subject, body) of a failed run's notification."""
    subject = f"{flow_name} failed: {flow_run_name}"
    lines = [f"flow run {flow_run_name!r} (id {flow_run_id}) of flow {flow_name!r} failed:",
             state_message or "(the state carries no message)"]
    if ui_url:
        lines.append(ui_url)
    return subject, "\n".join(lines)


def on_failure(flow, flow_run, state) -> None:
    """Flow state hook: tell the run's notification block (see :func:`notify_block_name`) that the run failed.

    Never raises: a block that cannot be loaded or that fails to send logs a warning on the run's logger.
    """
    name = None
    try:
        name = notify_block_name(flow_run.parameters or {})
        if name is None:
            return
        subject, body = failure_message(flow.name, flow_run.name, flow_run.id, state.message,
                                        url_for("flow-run", obj_id=flow_run.id))
        block = _resolved(Block.load(name))
        if not isinstance(block, NotificationBlock):
            raise TypeError(f"{type(block).__name__} is not a notification block")
        _resolved(block.notify(body, subject))
    except Exception as e:  # noqa: BLE001 - the night's failure is what the run reports, not the alert's
        flow_run_logger(flow_run, flow).warning("could not notify %r that flow run %r failed: %s: %s", name,
                                                flow_run.name, type(e).__name__, e)


def emit(event: str, model_name: str, payload: dict, related_run: str | None = None) -> None:
    """Raise a Prefect event about a registered model; never raises (a warning says why it was not sent).

    Args:
        event: the event name, e.g. ``"nnforecast.night.no-new-data"``.
        model_name: the registered model; the event's resource is ``nnforecast.model.<model_name>``.
        payload: what happened, JSON-serialisable (other values, e.g. timestamps, are sent as their ``str``).
        related_run: an MLflow run id, attached as the related resource ``mlflow.run.<id>`` (role
            ``mlflow-run``). The Prefect flow run is attached by Prefect itself when emitted inside one.
    """
    try:
        related = [] if related_run is None else [
            {"prefect.resource.id": f"mlflow.run.{related_run}", "prefect.resource.role": "mlflow-run"}]
        sent = emit_event(event, resource={"prefect.resource.id": f"nnforecast.model.{model_name}",
                                           "prefect.resource.name": model_name},
                          related=related, payload=json.loads(json.dumps(payload, default=str)))
        if sent is None:  # Prefect logged the error, or events are switched off for this API
            log.warning("event %s about model %r was not sent (see Prefect's log)", event, model_name)
    except Exception as e:  # noqa: BLE001 - an event is a side channel: the night's result stands
        log.warning("could not emit event %s about model %r: %s: %s", event, model_name, type(e).__name__, e)


def _resolved(value: Any) -> Any:
    """``value``, or what it resolves to if Prefect answered with a coroutine (see the module docstring)."""
    return run_coro_as_sync(value) if inspect.iscoroutine(value) else value
