"""The Open Inference Protocol's HTTP health endpoints, on the metrics port beside /metrics (docs/v2.md):
`GET /v2/health/live`, `/v2/health/ready` and `/v2/models/{name}/ready` answer 200 or 503 (an unknown model: 503,
as it is not ready), from the same states as grpc.health. Three GETs need no web framework: a WSGI app in front of
prometheus_client's, served by wsgiref in a thread per request, as prometheus_client serves /metrics."""

from __future__ import annotations

import re
import socket
import socketserver
import sys
import threading
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

LIVENESS = "liveness"  # server.py's always-SERVING-until-shutdown health service
MODEL_READY = re.compile(r"^/v2/models/([^/]+)/ready$")

NOT_SERVED = b"not served here: /v2/health/live, /v2/health/ready, /v2/models/{name}/ready, /metrics\n"
# A connection that sends nothing for this long is closed, and at most this many are served at once (beyond: closed
# at once): half-open connections would otherwise each hold a thread of the server's process for ever.
IDLE_SECONDS = 5.0
MAX_CONNECTIONS = 128

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


def with_health(metrics_app: WsgiApp, serving: Callable[[str], bool]) -> WsgiApp:
    """`metrics_app` with the V2 health paths in front; `serving(service)` is grpc.health's state of a service
    ("" the server, "liveness", or a model's name)."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/v2/health/live":
            service = LIVENESS
        elif path == "/v2/health/ready":
            service = ""
        elif (m := MODEL_READY.match(path)) is not None:
            service = m[1]
        elif path.startswith("/v2/"):  # not /metrics: a probe of a path we do not serve must not read 200
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(NOT_SERVED)))])
            return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else NOT_SERVED]
        else:
            return metrics_app(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return [b""]
        ok = serving(service)
        body = b"" if environ["REQUEST_METHOD"] == "HEAD" else (b"OK\n" if ok else b"not ready\n")
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


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
