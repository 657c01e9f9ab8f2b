"""Alerts through Prefect: a failed night tells a real notification block (a webhook to a loopback sink), and
events raised by the pipeline are stored by the (temporary) Prefect server."""
import asyncio
import logging
import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_UI_URL, temporary_settings

from flows.runtime import alerts

from .helpers import stored_events

pytestmark = pytest.mark.flow

STALE = "data is 12 days old (newest value 2008-04-11; --max-staleness 3D)"


@flow(name="alerts-stale-night", on_failure=[alerts.on_failure])
def stale_night(preset=None, overrides=None):
    raise ValueError(STALE)


@flow(name="alerts-stale-night-async", on_failure=[alerts.on_failure])
async def stale_night_async(preset=None, overrides=None):
    raise ValueError(STALE)


def run_night(kind: str, overrides):
    """A failing night (a sync or an async flow) → (its final state, its flow run)."""
    if kind == "sync":
        state = stale_night(preset=None, overrides=overrides, return_state=True)
    else:
        state = asyncio.run(stale_night_async(preset=None, overrides=overrides, return_state=True))
    with get_client(sync_client=True) as client:
        return state, client.read_flow_run(state.state_details.flow_run_id)


def test_the_block_name_comes_from_the_overrides_else_the_environment(monkeypatch):
    monkeypatch.setenv(alerts.ENV_BLOCK, "custom-webhook/from-env")
    chosen = {"preset": None, "overrides": {"notify": "slack-webhook/ops"}}
    assert alerts.notify_block_name(chosen) == "slack-webhook/ops"
    assert alerts.notify_block_name({"preset": None, "overrides": {"model": "gru"}}) == "custom-webhook/from-env"
    assert alerts.notify_block_name({"preset": None, "overrides": None}) == "custom-webhook/from-env"
    monkeypatch.delenv(alerts.ENV_BLOCK)
    assert alerts.notify_block_name({"preset": "notebook", "overrides": {}}) is None


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("via", ["overrides", "environment"])
@pytest.mark.fault(fault="the data is older than --max-staleness (a source that stopped updating)",
                   did="the night fails naming the age and the limit; the notification block (e.g. a webhook) "
                       "is told",
                   kept="the registry and the ledger as they were: nothing trained or registered")
def test_a_failed_night_tells_its_notification_block_once(webhook, sink, via, kind, monkeypatch):
    monkeypatch.delenv(alerts.ENV_BLOCK, raising=False)
    if via == "environment":
        monkeypatch.setenv(alerts.ENV_BLOCK, webhook)
    with temporary_settings({PREFECT_UI_URL: "http://prefect.example:4200"}):
        state, run = run_night(kind, {"notify": webhook} if via == "overrides" else {"model": "gru"})
    assert state.is_failed() and STALE in state.message
    posts = sink[1].posts
    assert len(posts) == 1, posts
    flow_name = (stale_night if kind == "sync" else stale_night_async).name
    assert posts[0]["subject"] == f"{flow_name} failed: {run.name}"
    body = posts[0]["body"]
    assert run.name in body and str(run.id) in body and STALE in body
    assert f"http://prefect.example:4200/runs/flow-run/{run.id}" in body


def test_a_night_without_a_notification_block_sends_nothing(webhook, sink, monkeypatch):
    monkeypatch.delenv(alerts.ENV_BLOCK, raising=False)
    state, _ = run_night("sync", {"model": "gru"})
    assert state.is_failed() and STALE in state.message
    assert sink[1].posts == []


@pytest.mark.parametrize("problem", ["unknown block", "webhook answers 500"])
def test_a_notification_that_fails_leaves_the_night_failing_with_its_own_error(webhook, sink, problem, caplog,
                                                                               monkeypatch):
    monkeypatch.delenv(alerts.ENV_BLOCK, raising=False)
    name = "custom-webhook/no-such-block" if problem == "unknown block" else webhook
    sink[1].status = 500
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match=r"data is 12 days old"):
        stale_night(preset=None, overrides={"notify": name})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "could not notify" in r.getMessage()]
    assert len(warnings) == 1 and repr(name) in warnings[0], warnings
    assert ("ValueError" if problem == "unknown block" else "HTTPStatusError: Server error '500") in warnings[0]
    assert len(sink[1].posts) == (0 if problem == "unknown block" else 1)


def test_an_event_is_stored_by_the_server_with_its_model_payload_and_runs(harness):
    model = f"model-{uuid.uuid4().hex[:8]}"

    @flow(name="alerts-quiet-night")
    def quiet_night():
        alerts.emit("nnforecast.night.no-new-data", model, {"newest": "2008-04-11", "rows": 3},
                    related_run="abc123")

    state = quiet_night(return_state=True)
    assert state.is_completed()
    events = stored_events("nnforecast.night.no-new-data", f"nnforecast.model.{model}")
    assert len(events) == 1
    event = events[0]
    assert event.resource.id == f"nnforecast.model.{model}" and event.resource.name == model
    assert event.payload == {"newest": "2008-04-11", "rows": 3}
    related = {r.id: r.role for r in event.related}
    assert related["mlflow.run.abc123"] == "mlflow-run"
    assert related[f"prefect.flow-run.{state.state_details.flow_run_id}"] == "flow-run"   # attached by Prefect


def test_an_event_that_cannot_be_sent_is_a_warning_not_an_error(harness, caplog):
    model = f"model-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="nnforecast"):
        alerts.emit("nnforecast.night.no-new-data", model, {"blob": "x" * 2_000_000})   # over the 1.5 MB maximum
    assert any("could not emit event nnforecast.night.no-new-data" in r.getMessage() and "EventTooLarge" in
               r.getMessage() for r in caplog.records)
    assert stored_events("nnforecast.night.no-new-data", f"nnforecast.model.{model}", timeout=2) == []
