"""Scale-out on one machine: three server processes on loopback addresses, the Go client balancing over them,
one killed with SIGKILL under load: no failed call; and outcomes reported to any of them counted once."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from .conftest import free_port

GO_MODULE = Path(__file__).resolve().parents[1] / "clients" / "go"
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def _port_free_everywhere() -> int:
    for _ in range(50):
        port = free_port()
        try:
            for host in HOSTS[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on all three loopback addresses")



def _go() -> str:
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            pytest.fail("go is not installed, and CI must run the failover test")
        pytest.skip("go is not installed")
    return go


def _three_servers(procs: list, *flags: str) -> str:
    """Three `serve` processes on one port of three loopback addresses, up and healthy: their spec for the Go
    tests ("addr|pid|metricsURL", comma-separated)."""
    port = _port_free_everywhere()
    spec = []
    for host in HOSTS:
        metrics = free_port()
        p = subprocess.Popen([sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--host", host, "--port",
                              str(port), "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics),
                              "--admin-port", "-1", "--poll-seconds", "0", *flags],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        spec.append(f"{host}:{port}|{p.pid}|http://127.0.0.1:{metrics}/metrics")
    for host in HOSTS:
        deadline = time.monotonic() + 30
        while subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "health", "--target",
                              f"{host}:{port}"], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, f"{host}:{port} did not come up"
            time.sleep(0.3)
    return ",".join(spec)


def test_outcomes_reported_to_any_replica_sharing_the_key_are_all_counted(tmp_path):
    """Predictions round-robin over three replicas with one --outcome-key-file; every outcome, reported through
    the same balanced Go client (mostly to another replica), is accepted and counted once."""
    go = _go()
    key = tmp_path / "outcome.key"
    key.write_bytes(os.urandom(32))
    procs: list = []
    try:
        spec = _three_servers(procs, "--outcome-key-file", str(key))
        proc = subprocess.run([go, "test", "-count=1", "-v", "-run", "^TestOutcomesAcrossReplicas$", "./inference"],
                              cwd=GO_MODULE, env={**os.environ, "DWCP_OUTCOME_SERVERS": spec},
                              capture_output=True, text=True, timeout=300)
        print(proc.stdout[-2000:])
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert "--- PASS: TestOutcomesAcrossReplicas" in proc.stdout and "SKIP" not in proc.stdout
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


def test_go_client_fails_over_when_a_server_is_killed():
    go = _go()
    procs: list = []
    try:
        spec = _three_servers(procs)
        proc = subprocess.run([go, "test", "-count=1", "-v", "-run", "^TestFailover$", "./inference"],
                              cwd=GO_MODULE, env={**os.environ, "DWCP_FAILOVER_SERVERS": spec},
                              capture_output=True, text=True, timeout=300)
        print(proc.stdout[-2000:])
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert "--- PASS: TestFailover" in proc.stdout and "SKIP" not in proc.stdout
        assert procs[0].wait(timeout=10) == -signal.SIGKILL
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=20)
