"""A load test of running services: N nightly runs triggered at once through the ``nightly`` deployment, plus one small
sweep through ``weekly-sweep``, then everything they should have left behind checked.

    python ops/services.py start --db postgres --dask-workers 2      # or SQLite, the default
    python ops/loadtest.py [--state-dir .services] [--runs 8] [--no-sweep] [--epochs 5] [--timeout 900]

The runs are short configurations of four kinds (the S&P 500 with an RNN and with a GRU, the monthly employment panel
with an MLP, the half-hourly electricity demand with its covariates), each kind twice with different seeds under one
model name, so that two runs finish and promote at nearly the same moment. The nightly deployment's concurrency limit
(1: two nights of one model never train at once) is raised to N for the test and restored afterwards.

Checked afterwards (each failure is listed, the exit status is 1 if any):

* every flow run Completed, its twelve task runs too;
* every nightly MLflow run FINISHED, with its test metrics and exactly one model version;
* per model, the ledger holds the night's forecast of exactly one of its runs, complete (a night's forecast
  replaces the same model's earlier forecast of that night: the last run to record it wins);
* per registered model, the ``champion`` alias on the version with the lowest test MASE, no version left ``pending``;
* the sweep's parent run with one child run per configuration, each with its backtest metrics;
* no "database is locked", constraint, deadlock or serialization error in any service log or flow-run log;
* with PostgreSQL, every statement its log says it rejected is one of the :data:`HANDLED` kinds, which MLflow
  catches and resolves by design (they are counted and reported, not hidden); anything else is a failure.

It prints one table row (backend, runs, completed, wall time, run durations, errors by kind) and, with ``--json``,
writes the whole result. ``tests/pipeline/test_platform.py`` runs it against PostgreSQL and against SQLite.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: what must never appear in a log of a healthy platform under load
PROBLEMS = {
    "database is locked": re.compile(r"database is locked", re.I),
    "constraint": re.compile(r"UNIQUE constraint failed|IntegrityError|UniqueViolation|duplicate key value|"
                             r"violates (?:unique|foreign key|not-null) constraint", re.I),
    "deadlock": re.compile(r"deadlock detected", re.I),
    "serialization": re.compile(r"could not serialize access", re.I),
}

#: statements PostgreSQL rejects (and logs as ERROR) that MLflow expects and resolves: reported, not failures
HANDLED = {
    "metric_pk": "MLflow's log_model re-inserts the run's step-0 metrics to link them to the logged model; the "
                 "primary key (no model id in it) rejects the batch and the store inserts row by row, skipping those "
                 "already there (one per run; SQLite does the same without a server log)",
    "registered_model_pk": "two runs register a new model name at the same moment: the second's insert is rejected "
                           "and it uses the model the first created (once per new model name)",
    "uq_experiments_workspace_name": "two runs create a new experiment at the same moment: the second reads the one "
                                      "the first created",
    "registered_model_alias_pk": "two runs of one model set its champion alias at the same moment: the second's "
                                 "insert is rejected; tracking.promote catches it, re-reads the registry and "
                                 "converges on the best version (the champion check verifies where it ends)",
}
PG_REJECTED = re.compile(r"ERROR:\s+(.*)")

#: four kinds of night, short; each is run with seeds 1, 2 (… for more runs) under one model name
KINDS = [
    dict(source="sp500", n_values=900, model="rnn", window=20, test_size=60, hidden_size=6),
    dict(source="sp500", n_values=900, model="gru", window=20, test_size=60, hidden_size=6),
    dict(source="us_employment", n_values=96, model="mlp", window=24, test_size=12, horizon=3, hidden_size=16),
    dict(source="elecdemand", n_values=2400, model="mlp", window=96, horizon=48, test_size=7, test_stride=48,
         hidden_size=16, target="delta", past_covariates="temperature_c", calendar="hour,dayofweek"),
]
NIGHTLY_TASKS = 12


def nights(n: int, epochs: int, experiment: str) -> list[dict]:
    """The overrides of ``n`` nightly runs: the kinds in turn, each kind's runs under one model name."""
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        name = f"{experiment}-{kind['source']}-{kind['model']}".replace("_", "-")
        out.append({**kind, "seed": 1 + i // len(KINDS), "epochs": epochs, "stat_baselines": "none",
                    "figures": False, "experiment": experiment, "model_name": name})
    return out


def sweep_parameters(epochs: int, experiment: str) -> dict:
    return {"grid": {"model": ["rnn", "mlp"], "hidden_size": [6]}, "folds": 2, "experiment": f"{experiment}-sweep",
            "overrides": {"source": "sp500", "n_values": 900, "window": 20, "test_size": 40, "epochs": epochs,
                          "stat_baselines": "none"}}


def run(state_dir: Path, runs: int = 8, sweep: bool = True, epochs: int = 5, timeout: float = 900,
        experiment: str = "load", log=print) -> dict:
    """Trigger, wait, check; returns the result (``problems`` lists every check that failed)."""
    services = json.loads((state_dir / "services.json").read_text())
    from prefect.settings import PREFECT_API_URL, temporary_settings

    saved = os.environ.get("PGPASSWORD")
    if services.get("db") == "postgres":   # the ledger's URL carries no password
        os.environ["PGPASSWORD"] = Path(services["pg_password_file"]).read_text().strip()
    try:
        # Prefect's settings are read once per process: these services' API for this block only
        with temporary_settings({PREFECT_API_URL: services["prefect_api_url"]}):
            return _run(state_dir, services, runs, sweep, epochs, timeout, experiment, log)
    finally:   # the caller's environment as it was (a test session goes on with its own stores)
        if saved is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = saved


def _run(state_dir: Path, services: dict, runs: int, sweep: bool, epochs: int, timeout: float, experiment: str,
         log) -> dict:
    mlflow_uri, ledger_url = services["mlflow_tracking_uri"], services.get("ledger_url")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.deployments import run_deployment

    wanted = nights(runs, epochs, experiment)
    logs_before = {p: p.stat().st_size for p in (state_dir / "logs").glob("*.log")}
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("nightly/nightly")
        limit = dep.global_concurrency_limit.limit if dep.global_concurrency_limit else None
        client.update_deployment(dep.id, DeploymentUpdate(concurrency_limit=runs))
        try:
            t0 = time.monotonic()
            triggered = [("nightly", o, run_deployment("nightly/nightly", parameters={"overrides": o}, timeout=0,
                                                       as_subflow=False)) for o in wanted]
            if sweep:
                p = sweep_parameters(epochs, experiment)
                triggered.append(("sweep", p, run_deployment("sweep/weekly-sweep", parameters=p, timeout=0,
                                                             as_subflow=False)))
            log(f"triggered {len(triggered)} flow runs at once")
            final = _wait(client, [fr.id for _, _, fr in triggered], timeout, t0, log)
            wall = time.monotonic() - t0
        finally:
            client.update_deployment(dep.id, DeploymentUpdate(concurrency_limit=limit))
        flow_logs = _flow_run_logs(client, list(final))
        task_states = {fid: _task_states(client, fid) for fid in final}

    result = {"backend": services.get("db", "sqlite"), "runs": runs, "sweep": sweep, "wall_s": wall,
              "dask": services.get("dask_address"), "flow_runs": [], "problems": [], "errors": {}}
    for kind, params, fr in triggered:
        state = final[fr.id]
        result["flow_runs"].append({"kind": kind, "id": str(fr.id), "name": fr.name, "state": state["type"],
                                    "message": state["message"], "seconds": state["seconds"], "lag": state["lag"],
                                    "model_name": params.get("model_name")})
        if state["type"] != "COMPLETED":
            result["problems"].append(f"{kind} flow run {fr.name} ended {state['type']}: {state['message']}")
        elif kind == "nightly" and (len(task_states[fr.id]) != NIGHTLY_TASKS
                                    or set(task_states[fr.id].values()) != {"COMPLETED"}):
            result["problems"].append(f"flow run {fr.name}: task runs {task_states[fr.id]}")
    result["problems"] += _check_mlflow(mlflow_uri, ledger_url, triggered, final, experiment)
    # every log line written during the test: the services' logs (the worker's includes its flow runs' output)
    # and the flow runs' logs in Prefect
    found: Counter = Counter()
    examples = {}
    texts = [(p.name, _read_from(p, logs_before.get(p, 0))) for p in sorted((state_dir / "logs").glob("*.log"))
             if p.name != "postgres.log"]
    texts += [(f"flow run {fid}", text) for fid, text in flow_logs.items()]
    for where, text in texts:
        for kind, pattern in PROBLEMS.items():
            hits = pattern.findall(text)
            if hits:
                found[kind] += len(hits)
                examples.setdefault(kind, f"{where}: {_line_of(text, pattern)}")
    result["errors"] = dict(found)
    pg_log = state_dir / "logs" / "postgres.log"
    result["db_rejections"] = rejected = Counter()
    if pg_log.exists():
        for message in PG_REJECTED.findall(_read_from(pg_log, logs_before.get(pg_log, 0))):
            handled = next((k for k in HANDLED if f'"{k}"' in message), None)
            rejected[handled or message.strip()[:200]] += 1
        result["problems"] += [f"PostgreSQL rejected {n} × {what}" for what, n in rejected.items() if what not in HANDLED]
    result["error_examples"] = examples
    result["problems"] += [f"{n} × {kind} in the logs, e.g. {examples[kind]}" for kind, n in found.items()]
    durations = [r["seconds"] for r in result["flow_runs"] if r["kind"] == "nightly" and r["seconds"] is not None]
    result["nightly_s"] = {"median": statistics.median(durations), "max": max(durations)} if durations else {}
    lags = [r["lag"] for r in result["flow_runs"] if r["lag"] is not None]
    result["start_lag_s"] = {"median": statistics.median(lags), "max": max(lags)} if lags else {}
    return result


def _wait(client, ids, timeout: float, t0: float, log) -> dict:
    pending, final = set(ids), {}
    while pending:
        for fid in list(pending):
            fr = client.read_flow_run(fid)
            if fr.state is not None and fr.state.is_final():
                seconds = fr.total_run_time.total_seconds() if fr.total_run_time else None
                lag = (fr.start_time - fr.created).total_seconds() if fr.start_time and fr.created else None
                final[fid] = {"type": fr.state.type.value, "message": fr.state.message or "", "seconds": seconds,
                              "lag": lag}
                pending.discard(fid)
                log(f"  {fr.name}: {fr.state.type.value} after {time.monotonic() - t0:.0f} s")
        if pending and time.monotonic() - t0 > timeout:
            for fid in pending:
                fr = client.read_flow_run(fid)
                final[fid] = {"type": f"NOT FINISHED ({fr.state.type.value if fr.state else 'no state'})",
                              "message": f"still running after {timeout:.0f} s", "seconds": None, "lag": None}
            break
        time.sleep(2)
    return final


def _task_states(client, flow_run_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 60   # task-run states reach the API through events: wait for them to settle
    while True:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        states = {t.name: t.state.type.value if t.state else "NONE" for t in runs}
        if all(t.state and t.state.is_final() for t in runs) or time.monotonic() > deadline:
            return states
        time.sleep(1)


def _flow_run_logs(client, ids) -> dict:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    out = {}
    for fid in ids:
        lines, offset = [], 0
        while True:
            page = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[fid])), limit=200, offset=offset)
            lines += [entry.message for entry in page]
            if len(page) < 200:
                break
            offset += 200
        out[fid] = "\n".join(lines)
    return out


def _check_mlflow(mlflow_uri: str, ledger_url: str | None, triggered, final, experiment: str) -> list[str]:
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    problems = []
    exp = c.get_experiment_by_name(experiment)
    nightly_runs = {}
    for kind, params, fr in triggered:
        if kind != "nightly" or final[fr.id]["type"] != "COMPLETED":
            continue
        found = c.search_runs([exp.experiment_id], filter_string=f"tags.prefect_flow_run_id = '{fr.id}'") if exp else []
        if len(found) != 1:
            problems.append(f"flow run {fr.name}: {len(found)} MLflow runs")
            continue
        r = found[0]
        nightly_runs[r.info.run_id] = {"name": fr.name, "model_name": params["model_name"],
                                       "rows": int(r.data.tags.get("ledger_rows", -1))}
        missing = [k for k in ("test_mae", "test_mase", "naive_test_mae", "train_loss") if k not in r.data.metrics]
        versions = c.search_model_versions(f"run_id = '{r.info.run_id}'")
        if r.info.status != "FINISHED" or missing:
            problems.append(f"MLflow run of {fr.name}: {r.info.status}, missing metrics {missing}")
        if len(versions) != 1 or versions[0].name != params["model_name"]:
            problems.append(f"MLflow run of {fr.name}: model versions {[(v.name, v.version) for v in versions]}")
    for name in sorted({p["model_name"] for k, p, _ in triggered if k == "nightly"}):
        versions = c.search_model_versions(f"name = '{name}'")
        if not versions:
            continue
        roles = Counter(v.tags.get("role") for v in versions)
        best = min(versions, key=lambda v: (float(v.tags.get("test_mase", "inf")), int(v.version)))
        try:
            champion = c.get_model_version_by_alias(name, "champion").version
        except Exception as e:   # noqa: BLE001 - reported as a problem, whatever the client raises
            champion = f"none ({type(e).__name__})"
        if str(champion) != str(best.version) or roles.get("pending"):
            problems.append(f"registered model {name}: champion v{champion}, best test MASE v{best.version}, "
                            f"roles {dict(roles)}")
    if ledger_url and nightly_runs:
        from sqlalchemy import bindparam, create_engine, text

        engine = create_engine(ledger_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT model_name, run_id, count(*) FROM forecasts WHERE run_id IN :ids "
                                         "GROUP BY model_name, run_id")
                                    .bindparams(bindparam("ids", expanding=True)), {"ids": list(nightly_runs)}).all()
        finally:
            engine.dispose()
        for name in sorted({p["model_name"] for k, p, _ in triggered if k == "nightly"}):
            kept = [(rid, n) for model, rid, n in rows if model == name]
            if len(kept) != 1 or kept[0][1] != nightly_runs[kept[0][0]]["rows"]:
                problems.append(f"ledger, model {name}: forecasts of runs {kept} (run, rows), expected one run's, "
                                "as many rows as it recorded")
    sweeps = [(p, fr) for k, p, fr in triggered if k == "sweep" and final[fr.id]["type"] == "COMPLETED"]
    for p, fr in sweeps:
        sexp = c.get_experiment_by_name(p["experiment"])
        parents = c.search_runs([sexp.experiment_id], filter_string=f"tags.prefect_flow_run_id = '{fr.id}'")
        if len(parents) != 1:
            problems.append(f"sweep {fr.name}: {len(parents)} parent runs")
            continue
        children = c.search_runs([sexp.experiment_id],
                                 filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
        n = len(p["grid"]["model"]) * len(p["grid"]["hidden_size"])
        complete = [r for r in children if r.info.status == "FINISHED" and "mean_test_mae" in r.data.metrics]
        if len(complete) != n:
            problems.append(f"sweep {fr.name}: {len(complete)} of {n} configurations finished with their metrics")
    return problems


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _line_of(text: str, pattern: re.Pattern) -> str:
    m = pattern.search(text)
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    return text[start:end if end >= 0 else None].strip()[:300]


def row(result: dict) -> str:
    done = sum(r["state"] == "COMPLETED" for r in result["flow_runs"])
    errors = ", ".join(f"{k} {n}" for k, n in sorted(result["errors"].items())) or "none"
    ns, lag, nan = result["nightly_s"], result["start_lag_s"], float("nan")
    handled = sum(n for k, n in result.get("db_rejections", {}).items() if k in HANDLED)
    return (f"| {result['backend']} | {result['runs']} nightly + {int(result['sweep'])} sweep | {done} of "
            f"{len(result['flow_runs'])} | {result['wall_s']:.0f} | {lag.get('median', nan):.0f} / "
            f"{lag.get('max', nan):.0f} | {ns.get('median', nan):.0f} / {ns.get('max', nan):.0f} | {errors} | "
            f"{handled if result['backend'] == 'postgres' else 'no server log'} | {len(result['problems'])} |")


HEADER = ("| backend | flow runs at once | completed | wall (s) | start lag median / max (s) | nightly run median / "
          "max (s) | errors in the logs | rejections MLflow handles | failed checks |\n"
          "|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python ops/loadtest.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dir", type=Path, default=ROOT / ".services", help="the running services' state directory")
    p.add_argument("--runs", type=int, default=8, help="nightly runs triggered at once (default 8)")
    p.add_argument("--no-sweep", action="store_true", help="no sweep alongside them")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--timeout", type=float, default=900, help="seconds for every run to finish (default 900)")
    p.add_argument("--experiment", default="load", help="MLflow experiment (and model-name prefix) of the test")
    p.add_argument("--json", type=Path, help="write the whole result here")
    args = p.parse_args(argv)
    if not (args.state_dir / "services.json").exists():
        p.error(f"--state-dir {args.state_dir}: no services.json (start them: python ops/services.py start)")
    result = run(args.state_dir, args.runs, not args.no_sweep, args.epochs, args.timeout, args.experiment)
    print(HEADER + "\n" + row(result))
    for problem in result["problems"]:
        print(f"FAILED: {problem}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
