"""Shorthands shared by the pipeline tests."""
import http.server
import json
import sys
import time
from typing import ClassVar

import numpy as np

from flows.core.config import WindowSpec
from flows.core.windowing import make_windows


def cut(values, dtype=np.float32, target: str = "level", season: int | None = None, **spec):
    """``make_windows`` with a :class:`WindowSpec` of ``spec`` (min-max levels unless ``target`` says otherwise)."""
    return make_windows(values, WindowSpec(target=target, **spec), dtype, season=season)


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers each path with ``routes[path](n)`` = (status, content type, body) for its n-th request."""

    routes: dict = {}
    hits: dict = {}

    def do_GET(self):  # noqa: N802
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        status, ctype, body = self.routes[self.path](self.hits[self.path])
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # the client gave up first (the time-out test): nothing to report
        super().handle_error(request, client_address)


class Sink(http.server.BaseHTTPRequestHandler):
    """Records every POSTed body (decoded JSON) in ``posts``; answers ``status``."""

    posts: ClassVar[list] = []
    status: ClassVar[int] = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.posts.append(json.loads(body))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stored_events(name: str, resource_id: str, timeout: float = 20.0) -> list:
    """The Prefect events of this name about this resource that the server has stored (waits for its persister)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10, at_exit=False)   # sent, not just queued in this process
    flt = EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            events = client.read_events(flt, limit=50).events   # the client's default 100 is over the server's 50
            if events or time.monotonic() > deadline:
                return events
            time.sleep(0.5)
