"""No secret of a data URL reaches MLflow (params, tags, artifacts, registry) or Prefect (logs, artifacts)."""
import base64
import http.server
import threading

import pytest

from flows.core.sources import expand_env, redact

PASSWORD, API_KEY, TOKEN = "hunter2-pw", "KEY-8f3a91", "TOKEN-77c2e0"


def test_redact_and_expand_env(monkeypatch):
    assert redact(f"https://ann:{PASSWORD}@h:81/p.csv?api_key={API_KEY}&x=1&token=t&flag") == \
        "https://ann:***@h:81/p.csv?api_key=***&x=1&token=***&flag"
    assert redact("sp500") == "sp500" and redact("/data/p.csv") == "/data/p.csv"
    # a URL with nothing secret comes back as it was (an absolute SQLite path keeps its four slashes)
    assert redact("sqlite:////srv/ledger.db") == "sqlite:////srv/ledger.db"
    assert redact("postgresql+psycopg://ann:pw@db/forecasts") == "postgresql+psycopg://ann:***@db/forecasts"
    monkeypatch.setenv("NNF_TOKEN", TOKEN)
    assert expand_env("https://h/p.csv?token=${NNF_TOKEN}") == f"https://h/p.csv?token={TOKEN}"
    monkeypatch.delenv("NNF_TOKEN")
    with pytest.raises(ValueError, match="environment variable NNF_TOKEN is not set"):
        expand_env("https://h/p.csv?token=${NNF_TOKEN}")


@pytest.mark.flow
@pytest.mark.fault(fault="a data URL carrying a password, an API key and a token (from `${ENV}`)",
                   did="downloaded with basic auth; redacted the URL (`***`) in every parameter, tag, log line, "
                       "report and figure",
                   kept="the secrets out of MLflow and Prefect logs/artifacts (the token also out of the flow "
                        "run's parameters)")
def test_no_secret_in_tracking_logs_or_artifacts(harness, seeded_cache, monkeypatch, tmp_path):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    from flows.runtime import tracking
    from flows.nightly import nightly

    body = (seeded_cache / "SP500_Datos.csv").read_bytes()
    expected_auth = "Basic " + base64.b64encode(f"ann:{PASSWORD}".encode()).decode()
    seen = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen["auth"], seen["path"] = self.headers.get("Authorization"), self.path
            ok = self.headers.get("Authorization") == expected_auth
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "text/csv")
            self.end_headers()
            self.wfile.write(body if ok else b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NNF_DATA_TOKEN", TOKEN)
    monkeypatch.setenv("NNFORECAST_CACHE_DIR", str(tmp_path / "cache"))
    source = (f"http://ann:{PASSWORD}@127.0.0.1:{server.server_address[1]}/sp.csv?api_key={API_KEY}"
              "&token=${NNF_DATA_TOKEN}")
    try:
        state = nightly(overrides=dict(source=source, n_values=900, window=20, test_size=60, hidden_size=6, epochs=3,
                                       experiment="secrets", model_name="secrets-model"), return_state=True)
    finally:
        server.shutdown()
    assert state.is_completed(), state
    assert seen["auth"] == expected_auth and TOKEN in seen["path"] and API_KEY in seen["path"]
    summary = state.result()

    texts = []
    c = MlflowClient(tracking.tracking_uri())
    run = c.get_run(summary.run_id)
    texts += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
    assert run.data.params["source"].startswith("http://ann:***@127.0.0.1:")
    local = c.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts"))
    from pathlib import Path
    texts += [p.read_bytes().decode("latin-1") for p in Path(local).rglob("*") if p.is_file()]
    version = c.get_model_version("secrets-model", summary.version)
    texts += [f"{k}={v}" for k, v in version.tags.items()] + [version.source or ""]

    with get_client(sync_client=True) as pc:
        flow_run_id = state.state_details.flow_run_id
        logs = pc.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        texts += [log.message for log in logs]
        texts += [str(a.data) for a in pc.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))]
        params = pc.read_flow_run(flow_run_id).parameters
    assert len(texts) > 20 and any("***" in t for t in texts)
    for secret in (PASSWORD, API_KEY, TOKEN):
        leaks = [t[:200] for t in texts if secret in t]
        assert not leaks, f"{secret} leaked: {leaks}"
    # what the caller passes is stored as the flow run's parameter: a ${VAR} keeps the token out
    assert TOKEN not in str(params) and "${NNF_DATA_TOKEN}" in params["overrides"]["source"]
