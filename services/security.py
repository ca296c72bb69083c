"""Transport security: TLS from certificate files, reloaded when they change (no restart), optional mutual TLS,
and a bearer token for the admin API."""

from __future__ import annotations

import hmac
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import grpc

log = logging.getLogger(__name__)


class CertificateFiles:
    """The server's key and certificate chain (and, for mutual TLS, the CA that signs client certificates),
    read again whenever one of the files changes. A rotation is picked up by the next handshake."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None):
        self.paths = [Path(cert), Path(key)] + ([Path(client_ca)] if client_ca else [])
        self.client_ca = client_ca
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self.initial = self._config()

    def _stamps(self) -> tuple:
        return tuple(os.stat(p).st_mtime_ns for p in self.paths)

    def _config(self) -> grpc.ServerCertificateConfiguration:
        cert, key = self.paths[0].read_bytes(), self.paths[1].read_bytes()
        ca = self.paths[2].read_bytes() if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before every handshake: a new configuration when the files changed, else None."""
        try:
            stamp = self._stamps()
            with self._lock:
                if stamp == self._stamp:
                    return None
                config = self._config()
                self._stamp = stamp
        except (OSError, ValueError) as e:  # a rotation half done: keep the current certificate
            log.warning("TLS files unreadable, keeping the current certificate: %s", e)
            return None
        log.info("TLS certificate reloaded from %s", self.paths[0])
        return config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.initial, self.fetch,
                                                   require_client_authentication=self.client_ca is not None)


class BearerToken(grpc.ServerInterceptor):
    """Refuses every call without `authorization: Bearer <token>` with UNAUTHENTICATED."""

    def __init__(self, token: str):
        self.expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self.expected):
            return continuation(details)

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: expected a bearer token for the admin API")

        return grpc.unary_unary_rpc_method_handler(deny)
