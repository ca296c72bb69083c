"""The Open Inference Protocol's HTTP health endpoints, on the metrics port beside /metrics (docs/v2.md):
`GET /v2/health/live`, `/v2/health/ready` and `/v2/models/{name}/ready` answer 200 or 503 (an unknown model: 503,
as it is not ready), from the same states as grpc.health; `/v2/models/{name}/versions/{version}/ready` answers as
gRPC's ModelReady with a version (200 loaded, 503 loaded but shutting down), and 404 for a model the repository
does not hold or a version it has not loaded (the body says which). Four GETs need no web framework: a WSGI app in
front of prometheus_client's, served by wsgiref in a thread per request, as prometheus_client serves /metrics."""

from __future__ import annotations

import re
import socket
import socketserver
import sys
import threading
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .errors import shown

LIVENESS = "liveness"  # server.py's always-SERVING-until-shutdown health service
MODEL_READY = re.compile(r"^/v2/models/([^/]+)/ready$")
VERSION_READY = re.compile(r"^/v2/models/([^/]+)/versions/([^/]+)/ready$")

NOT_SERVED = (b"not served here: /v2/health/live, /v2/health/ready, /v2/models/{name}/ready, "
              b"/v2/models/{name}/versions/{version}/ready, /metrics\n")
# A connection that sends nothing for this long is closed, and at most this many are served at once (beyond: closed
# at once): half-open connections would otherwise each hold a thread of the server's process for ever.
IDLE_SECONDS = 5.0
MAX_CONNECTIONS = 128

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


def with_health(metrics_app: WsgiApp, serving: Callable[[str], bool],
                loaded: Callable[[], dict[str, dict]] | None = None) -> WsgiApp:
    """`metrics_app` with the V2 health paths in front; `serving(service)` is grpc.health's state of a service
    ("" the server, "liveness", or a model's name); `loaded()` every loaded version by model (Repository.loaded),
    for the versioned path (not served without it)."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/v2/"):
            return metrics_app(environ, start_response)
        answer = _answer(path, serving, loaded)
        if answer is None:  # a probe of a path we do not serve must not read 200 from the metrics page
            status, body, headers = "404 Not Found", NOT_SERVED, []
        elif environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            status, body, headers = "405 Method Not Allowed", b"", [("Allow", "GET, HEAD")]
        else:
            (status, body), headers = answer, []
        start_response(status, headers + [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    return app


def _answer(path: str, serving: Callable[[str], bool],
            loaded: Callable[[], dict[str, dict]] | None) -> tuple[str, bytes] | None:
    """The status and body for a V2 health path; None for a path not served."""
    if path == "/v2/health/live":
        return _ready(serving(LIVENESS))
    if path == "/v2/health/ready":
        return _ready(serving(""))
    if (m := MODEL_READY.match(path)) is not None:
        return _ready(serving(m[1]))
    if loaded is not None and (m := VERSION_READY.match(path)) is not None:
        return _version_ready(m[1], m[2], serving, loaded())
    return None


def _ready(ok: bool) -> tuple[str, bytes]:
    return ("200 OK", b"OK\n") if ok else ("503 Service Unavailable", b"not ready\n")


def _version_ready(name: str, version: str, serving: Callable[[str], bool],
                   loaded: dict[str, dict]) -> tuple[str, bytes]:
    """Ready as gRPC's ModelReady with a version answers (loaded, server live); unknown model or version: 404."""
    if name not in loaded:
        return "404 Not Found", f"unknown model {shown(name)}: the repository does not hold it\n".encode()
    if version not in loaded[name]:
        have = ", ".join(sorted(loaded[name], key=int)) or "none"
        return "404 Not Found", f"unknown version {shown(version)} of model {name} (loaded: {have})\n".encode()
    return _ready(serving(LIVENESS))


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the listen backlog (socketserver's 5 drops connects under probes: a 1 s retry)
    _slots = threading.BoundedSemaphore(MAX_CONNECTIONS)  # replaced per server in serve()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot is not coming back from it
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client gone quiet (timeout) or away is not news
            super().handle_error(request, client_address)


class _Quiet(WSGIRequestHandler):
    timeout = IDLE_SECONDS  # of each read and write on the connection

    def log_message(self, format: str, *args: Any) -> None:  # scrapes and probes are not worth a log line each
        pass


def serve(app: WsgiApp, port: int, addr: str) -> tuple[WSGIServer, threading.Thread]:
    """`app` on addr:port (IPv4 or IPv6, as addr resolves) in a daemon thread: (server, thread)."""
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
    server_cls = type("HealthAndMetricsServer", (_ThreadingServer,), {
        "address_family": family, "_slots": threading.BoundedSemaphore(MAX_CONNECTIONS)})
    httpd = make_server(addr, port, app, server_cls, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread
