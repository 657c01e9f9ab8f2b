"""Environment defaults applied before Prefect or MLflow are imported (explicit settings win).

* ``PREFECT_HOME`` in the project (git-ignored), not the machine-wide ``~/.prefect``;
* no telemetry (Prefect server analytics also races the temporary server's startup lock);
* a startup timeout that a cold temporary server on 2 cores meets;
* a quiet console: Prefect's own INFO lines go to the UI, not the terminal; no MLflow download progress bars.
"""
import os

from flows.core.files import PROJECT_ROOT  # standard library only: nothing is imported before the defaults

DEFAULTS = {
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",   # a progress bar per artifact download, on a log file
}

for key, value in DEFAULTS.items():
    os.environ.setdefault(key, value)
