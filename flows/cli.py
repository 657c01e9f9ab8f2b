"""What the command lines share: flags generated from the run specs, console output, running a flow.

``add_config_arguments`` turns every field of :mod:`flows.core.config`'s specs into a flag
(``hidden_size`` → ``--hidden-size``), grouped by spec in ``--help``, typed from the spec's
annotations, with the registry's choices; a flag not given stays out of the overrides, so a
preset's value holds unless a flag says otherwise.
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys

from flows.core.config import PARAMETERS, PRESETS, SPECS, value_type
from flows.runtime import server


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per run parameter, grouped by spec; defaults stay out of the parsed namespace."""
    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help="named preset applied before the explicit flags")
    for section, spec in SPECS.items():
        group = parser.add_argument_group(f"{section} ({spec.__name__}: {spec.__doc__.strip().rstrip('.')})")
        for name, (sec, f) in PARAMETERS.items():
            if sec != section:
                continue
            choices = f.metadata["choices"]
            if value_type(name) is bool:   # --per-series / --no-per-series
                group.add_argument("--" + name.replace("_", "-"), dest=name, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {f.default})")
                continue
            group.add_argument("--" + name.replace("_", "-"), dest=name, type=value_type(name),
                               choices=list(choices) if choices is not None else None, default=argparse.SUPPRESS,
                               help=f"{f.metadata['help']} (default: {f.default})")


def overrides_from(args: argparse.Namespace) -> dict:
    """The run parameters given on the command line."""
    return {k: v for k, v in vars(args).items() if k in PARAMETERS}


class _Stdout(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a line is logged (a test runner swaps it, then closes it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def console_logging() -> None:
    """Short progress lines on the console; MLflow's INFO chatter stays out of it."""
    handler = _Stdout()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log = logging.getLogger("nnforecast")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def run_flow(flow_fn, kwargs: dict):
    """Call the flow; on the CLI's own temporary server, without run heartbeats.

    Heartbeats let a server mark a crashed run; a temporary server ends with this process, so
    there is nothing to mark, and the heartbeat thread costs ~1 s to join at the end.
    """
    if not server.started():
        return flow_fn(**kwargs)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return flow_fn(**kwargs)


def exit_fast(code: int) -> None:
    """Exit with ``code`` without the interpreter's final garbage collection.

    That collection walks every object Prefect, MLflow and pyarrow allocated: 2 s at exit. Frozen
    objects are skipped (refcounting still frees memory).
    """
    gc.freeze()
    sys.exit(code)
