"""Fixtures start real things: a repository trained by the real jobs (quick size), a real server on a free
loopback port, a real channel."""

from __future__ import annotations

import json
import socket
import shutil
from pathlib import Path

import grpc
import pytest

from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.services.server import start
from dwcp_inference.services.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All four models trained at quick size by the real jobs, exported and published."""
    from dwcp_inference.training import jobs

    root = tmp_path_factory.mktemp("repo")
    # Quick models are smoke-sized: they need not pass the promotion gate.
    results = {m: jobs.run(m, root, size="quick", seed=0, force=True) for m in jobs.MODELS}
    (root / "results.json").write_text(json.dumps(results, default=float))
    return root


@pytest.fixture(scope="session")
def training_results(trained_repo: Path) -> dict:
    return json.loads((trained_repo / "results.json").read_text())


@pytest.fixture()
def repo_copy(trained_repo: Path, tmp_path: Path) -> Path:
    """A private copy a test may break."""
    dst = tmp_path / "repo"
    shutil.copytree(trained_repo, dst, ignore=shutil.ignore_patterns("results.json"))
    return dst


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_server(repository: Path, **kw):
    kw = {"host": "127.0.0.1", "port": 0, "metrics_host": "127.0.0.1", "metrics_port": 0, "admin_port": 0, **kw}
    settings = Settings(repository=repository, **kw)
    return start(settings)


@pytest.fixture(scope="module")
def server(trained_repo: Path):
    running = start_server(trained_repo)
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="module")
def stub(channel) -> pb_grpc.InferenceServiceStub:
    return pb_grpc.InferenceServiceStub(channel)
