"""Server settings: one dataclass; every field is a `serve` flag and a DWCP_INFERENCE_* environment variable."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

ENV_PREFIX = "DWCP_INFERENCE_"


def bundled_models() -> Path:
    """The small default repository shipped inside the package (made by `make models`)."""
    import dwcp_inference

    return Path(dwcp_inference.__file__).resolve().parent / "models"


# The lowest value each numeric setting may take (ports: 0 picks a free one, -1 turns it off where it may be off).
MINIMUM = {"port": 0, "metrics_port": -1, "admin_port": -1, "health_port": -1, "threads": 1, "workers": 1,
           "session_threads": 1, "max_batch": 1, "max_message_bytes": 1, "grace_seconds": 0, "poll_seconds": 0,
           "max_concurrent_rpcs": 1, "max_window": 1, "outcome_capacity": 1, "outcome_max_age_seconds": 1,
           "batch_max_rows": 1, "batch_max_wait_us": 0, "coalesce_max": 1,
           "max_watchers": 1, "shadow_fraction": 0}


@dataclass
class Settings:
    repository: Path | None = None      # None: the bundled models
    state_dir: Path | None = None       # admin state (each model's policy.json); None: in the repository
    host: str = "127.0.0.1"             # the inference port: loopback unless chosen (the image sets 0.0.0.0)
    port: int = 50051                   # 0 picks a free port
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9464            # 0 picks a free port; -1 disables /metrics
    threads: int = 2                    # threads computing RPCs per worker process (more only contend for the GIL)
    workers: int = 1                    # server processes on the same port (SO_REUSEPORT), supervised
    session_threads: int = 1            # onnxruntime intra-op threads per model version
    max_batch: int = 1024               # items per batch RPC
    max_message_bytes: int = 4 << 20
    grace_seconds: float = 10.0         # how long in-flight RPCs may finish after SIGTERM
    poll_seconds: float = 2.0           # how often the repository is rescanned; 0 disables
    admin_host: str = "127.0.0.1"       # the admin API: loopback unless chosen otherwise
    admin_port: int = 50052             # 0 picks a free port; -1 disables the admin API
    admin_token: str = ""               # when set, admin calls need "authorization: Bearer <token>"
    tls_cert: Path | None = None        # PEM certificate chain: TLS on the inference and admin ports
    tls_key: Path | None = None         # PEM private key
    tls_client_ca: Path | None = None   # PEM CA: mutual TLS, clients must present a certificate it signed
    max_concurrent_rpcs: int = 32       # inference RPCs admitted at once per worker (running or queued);
                                        # beyond: RESOURCE_EXHAUSTED. Health and reflection never count.
    max_watchers: int = 64              # WatchModels streams open at once per worker, apart from max_concurrent_rpcs;
                                        # beyond: RESOURCE_EXHAUSTED
    health_host: str = "0.0.0.0"        # the health port tells only SERVING / NOT_SERVING
    health_port: int = -1               # plaintext grpc.health.v1 only (probes when TLS is on); -1: off
    max_window: int = 1024              # samples accepted in one history or window
    outcome_capacity: int = 100_000     # deprecated, ignored: prediction ids are signed, nothing is remembered
    outcome_key_file: Path | None = None  # key (>= 16 bytes) signing prediction ids; share it across replicas
    outcome_max_age_seconds: float = 86400.0  # outcomes for older prediction ids are NOT_FOUND "expired"
    batch_max_rows: int = 256           # micro-batching: rows per onnxruntime call; 1 turns it off
    batch_max_wait_us: int = 0          # micro-batching: extra wait for company once calls queue; 0: none
    coalesce_max: int = 64              # single calls of one RPC waiting together computed as one batch, up to
                                        # this many; 1 turns it off
    log_level: str = "INFO"             # DEBUG, INFO, WARNING, ERROR (workers too)
    log_format: str = "text"            # text, or json: one JSON object a line (services/logs.py)
    decoder: str = "auto"               # request bytes to columns: auto (native when installed), native, python
    front: str = "auto"                 # the inference port's transport: auto (native when installed), native
                                        # (the Rust front, services/front.py), grpcio (grpc.aio, transport.py)
    shadow_fraction: float = 0.1        # share of a model's calls its candidate (stage staging) also runs on, off
                                        # the caller's path (services/shadow.py); 0 turns the shadow off

    def out_of_range(self) -> list[str]:
        """The numeric settings that are not finite or are below their lowest allowed value (MINIMUM)."""
        bad = []
        for name, lowest in MINIMUM.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= lowest):
                bad.append(f"--{name.replace('_', '-')} ({self.env_name(name)}): expected a finite number >= "
                           f"{lowest}, got {value}")
        return bad

    def resolved_repository(self) -> Path:
        return Path(self.repository) if self.repository else bundled_models()

    @staticmethod
    def env_name(field_name: str) -> str:
        return ENV_PREFIX + field_name.upper()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
