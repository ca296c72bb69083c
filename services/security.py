"""Transport security: TLS from certificate files, reloaded when they change (no restart), optional mutual TLS,
and a bearer token for the admin API."""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc

from . import audit

log = logging.getLogger(__name__)


class CertificateFiles:
    """The server's key and certificate chain (and, for mutual TLS, the CA that signs client certificates),
    read again whenever one of the files changes. A rotation is picked up by the next handshake on every port:
    each port's credentials remember which generation they serve. A new pair is used only once it parses and the
    key matches the certificate; until then every port keeps the current one."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None):
        self.paths = [Path(cert), Path(key)] + ([Path(client_ca)] if client_ca else [])
        self.client_ca = client_ca
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._refused_stamp: tuple | None = None
        self.generation = 0
        self.current, self._pems = self._config()  # at start a bad pair is an error, not a warning

    def _stamps(self) -> tuple:
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in map(os.stat, self.paths))

    def _config(self) -> tuple[grpc.ServerCertificateConfiguration, tuple[bytes, bytes, bytes | None]]:
        cert, key = self.paths[0].read_bytes(), self.paths[1].read_bytes()
        ca = self.paths[2].read_bytes() if self.client_ca else None
        check_pair(cert, key, ca)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca), (cert, key, ca)

    def pems(self) -> tuple[bytes, bytes, bytes | None]:
        """The current good certificate chain, key and client CA as PEM bytes (for the native front)."""
        with self._lock:
            return self._pems

    def latest(self) -> tuple[int, grpc.ServerCertificateConfiguration]:
        """The newest good configuration and its generation, reading the files again if they changed."""
        with self._lock:
            stamp: tuple = ("unreadable",)
            try:
                stamp = self._stamps()
                if stamp != self._stamp and stamp != self._refused_stamp:
                    config, pems = self._config()
                    self._stamp, self.current, self._pems = stamp, config, pems
                    self.generation += 1
                    log.info("TLS certificate reloaded from %s", self.paths[0])
            except (OSError, ValueError, ssl.SSLError) as e:  # a rotation half done: keep the current pair
                if stamp != self._refused_stamp:
                    log.warning("TLS files unusable (half written, or the key is not the certificate's), keeping the "
                                "current certificate: %s", e)
                self._refused_stamp = stamp
            return self.generation, self.current

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for one port, following rotations on their own."""
        served = self.generation

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            """Called by gRPC before every handshake: a configuration this port has not served yet, or None."""
            nonlocal served
            generation, config = self.latest()
            if generation == served:
                return None
            served = generation
            return config

        return grpc.dynamic_ssl_server_credentials(self.current, fetch,
                                                   require_client_authentication=self.client_ca is not None)


def check_pair(cert: bytes, key: bytes, client_ca: bytes | None = None) -> None:
    """Raise ssl.SSLError (or ValueError) unless the PEM chain and key parse and the key is the certificate's.
    OpenSSL, through the standard library, judges them as it will at the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with _readable(cert) as cert_file, _readable(key) as key_file:
        context.load_cert_chain(cert_file, key_file)
    if client_ca is not None:
        context.load_verify_locations(cadata=client_ca.decode("ascii", errors="replace"))


@contextlib.contextmanager
def _readable(data: bytes) -> Iterator[str]:
    """A path holding `data` for ssl, which reads only files: an anonymous memory file where Linux has them (no
    writable directory needed), else a private temporary file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("dwcp-tls")
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile() as f:  # created 0600
        f.write(data)
        f.flush()
        yield f.name


def metadata_is(details: grpc.HandlerCallDetails, key: str, expected: bytes) -> bool:
    """Whether the call's metadata `key` is `expected`, compared in constant time (a secret: a token)."""
    given = dict(details.invocation_metadata or ()).get(key, "")
    return hmac.compare_digest(given.encode() if isinstance(given, str) else given, expected)


class BearerToken(grpc.ServerInterceptor):
    """Refuses every call without `authorization: Bearer <token>` with UNAUTHENTICATED."""

    def __init__(self, token: str):
        self.expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if metadata_is(details, "authorization", self.expected):
            return continuation(details)

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            why = "authorization: expected a bearer token for the admin API"
            audit.refused(details.method, request, context, grpc.StatusCode.UNAUTHENTICATED, why,
                          token="wrong" if given else "missing")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

        return grpc.unary_unary_rpc_method_handler(deny)
