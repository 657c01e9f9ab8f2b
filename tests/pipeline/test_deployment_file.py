"""prefect.yaml declares the nightly and weekly-sweep deployments the README describes; their entrypoints load."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_nightly_deployment_declaration():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (nightly,) = [d for d in spec["deployments"] if d["name"] == "nightly"]
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "America/New_York", "active": True}]
    assert nightly["concurrency_limit"]["limit"] == 1
    assert nightly["work_pool"]["name"] == "nightly-pool"
    from flows.core.config import RunConfig

    RunConfig.resolve(nightly["parameters"].get("preset"), nightly["parameters"]["overrides"])  # valid parameters


def test_entrypoint_loads_the_flow():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    flow = load_flow_from_entrypoint(spec["deployments"][0]["entrypoint"])
    assert flow.name == "nightly"
    assert set(flow.parameters.properties) == {"preset", "overrides"}


def test_weekly_sweep_deployment_declaration():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (weekly,) = [d for d in spec["deployments"] if d["name"] == "weekly-sweep"]
    assert weekly["schedules"] == [{"cron": "0 6 * * 6", "timezone": "America/New_York", "active": True}]
    assert weekly["concurrency_limit"]["limit"] == 1
    from prefect.flows import load_flow_from_entrypoint

    from flows.sweep import expand_grid

    flow = load_flow_from_entrypoint(weekly["entrypoint"])
    assert flow.name == "sweep"
    params = weekly["parameters"]
    assert set(params) <= set(flow.parameters.properties)
    assert len(expand_grid(params["grid"])) == 8  # four model kinds × two hidden sizes, all valid


def test_backfill_deployment_declaration():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (backfill,) = [d for d in spec["deployments"] if d["name"] == "backfill"]
    assert "schedules" not in backfill and backfill["concurrency_limit"]["limit"] == 1
    from prefect.flows import load_flow_from_entrypoint

    from flows.core.config import RunConfig

    flow = load_flow_from_entrypoint(backfill["entrypoint"])
    assert flow.name == "backfill"
    assert set(flow.parameters.properties) == {"start", "end", "preset", "overrides"}
    assert set(flow.parameters.required) == {"start", "end"}
    RunConfig.resolve(None, backfill["parameters"]["overrides"])


def test_entrypoints_are_modules_a_dask_worker_can_import():
    """A file entrypoint (``flows/sweep.py:sweep``) is loaded as the top-level module ``sweep``: its tasks pickle by
    reference to ``sweep``, which a worker of a cluster started on its own cannot import (``No module named
    'sweep'``, met by the weekly sweep on the services' Dask cluster). A module entrypoint keeps them ``flows.*``."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for d in spec["deployments"]:
        flow = load_flow_from_entrypoint(d["entrypoint"])
        assert flow.fn.__module__ == d["entrypoint"].split(":")[0] and flow.fn.__module__.startswith("flows."), d
