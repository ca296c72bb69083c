"""Logs and the admin audit trail, read as a log pipeline reads them: the lines a real `serve` writes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import trustme

from dwcp_inference.services.settings import bundled_models
from .conftest import free_port

CLI = [sys.executable, "-m", "dwcp_inference.commands.cli"]


def _record(**extra) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "dwcp_inference.services.repository", "levelno": logging.INFO,
                                    "levelname": "INFO", "msg": "loaded %s version %s",
                                    "args": ("bandwidth_predictor", "3")})
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_time_level_logger_message_and_fields():
    from dwcp_inference.services import logs

    line = json.loads(logs.JsonLines({"worker": 1}).format(_record(model="bandwidth_predictor", version="3",
                                                                     peer="ipv4:127.0.0.1:5000")))
    assert line["level"] == "INFO" and line["logger"] == "dwcp_inference.services.repository"
    assert line["message"] == "loaded bandwidth_predictor version 3" and line["time"].endswith("+00:00")
    assert (line["model"], line["version"], line["peer"], line["worker"]) == ("bandwidth_predictor", "3",
                                                                               "ipv4:127.0.0.1:5000", 1)


def test_text_lines_append_the_fields():
    from dwcp_inference.services import logs

    line = logs.TextFormatter("%(levelname)s %(name)s: %(message)s").format(
        _record(models={"bandwidth_predictor": "3"}, peer="ipv4:127.0.0.1:5000"))
    assert line == ('INFO dwcp_inference.services.repository: loaded bandwidth_predictor version 3 '
                    'models={"bandwidth_predictor": "3"} peer=ipv4:127.0.0.1:5000')


class Server:
    """A `dwcp-inference serve` subprocess whose stderr lines are collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.port, self.admin = free_port(), free_port()
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--admin-port", str(self.admin),
             "--metrics-port", "-1", *args], env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def wait_for(self, predicate, what: str, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if predicate(line)]
            if found:
                return found
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}: {self.lines[-20:]}"
            time.sleep(0.2)
        raise AssertionError(f"no {what} in {self.lines[-20:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def _json(line: str) -> dict:
    return json.loads(line)


def test_serve_writes_only_json_lines_and_workers_follow_the_format_and_level(tmp_path):
    server = Server("--workers", "2", "--log-format", "json", "--log-level", "DEBUG")
    try:
        for worker in (0, 1):  # either may start first
            server.wait_for(lambda line: '"serving ' in line and f'"worker": {worker}' in line,
                            f"worker {worker} serving line")
    finally:
        server.stop()
    records = [_json(line) for line in server.lines if line.startswith("{")]
    assert records and {"time", "level", "logger", "message"} <= set(records[0])
    assert {r.get("worker") for r in records} >= {0, 1}
    assert any(r["level"] == "DEBUG" for r in records if "worker" in r)  # the workers honour --log-level
    # every line is JSON, except the supervisor's plain progress lines on stdout (not collected here)
    assert all(line.startswith("{") for line in server.lines if line.strip()), server.lines[:5]


def _certificates(tmp_path: Path) -> tuple[list[str], list[str]]:
    """Server flags for mutual TLS, and the client flags of an operator whose certificate says 'alice'."""
    ca, client_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = client_ca.issue_cert("alice@ops.example", common_name="alice@ops.example")
    files = {"chain": b"".join(b.bytes() for b in server.cert_chain_pems), "key": server.private_key_pem.bytes(),
             "ca": ca.cert_pem.bytes(), "client_ca": client_ca.cert_pem.bytes(),
             "client": b"".join(b.bytes() for b in client.cert_chain_pems), "client_key": client.private_key_pem.bytes()}
    for name, data in files.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    p = {name: str(tmp_path / f"{name}.pem") for name in files}
    return (["--tls-cert", p["chain"], "--tls-key", p["key"], "--tls-client-ca", p["client_ca"]],
            ["--ca", p["ca"], "--cert", p["client"], "--key", p["client_key"]])


def test_admin_actions_and_refused_calls_leave_one_audit_line_each(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(bundled_models(), repo, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    server_tls, client_tls = _certificates(tmp_path)
    server = Server("--repository", str(repo), "--log-format", "json", "--admin-token", "tok", *server_tls)

    def audit_lines() -> list[dict]:
        return [r for r in map(_json, list(server.lines)) if r["logger"] == "dwcp_inference.audit"]

    def admin(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, "models", "--admin", f"127.0.0.1:{server.admin}", *client_tls, *args],
                              capture_output=True, text=True, timeout=60)

    try:
        server.wait_for(lambda line: '"serving ' in line, "serving line")
        promoted = admin("--token", "tok", "promote", "bandwidth", "1", "--label", "canary")
        denied = admin("--token", "wrong", "promote", "bandwidth_predictor", "1")
        invalid = admin("--token", "tok", "promote", "bandwidth_predictor", "99")
        server.wait_for(lambda line: '"dwcp_inference.audit"' in line and "INVALID_ARGUMENT" in line, "audit line")
    finally:
        server.stop()
    assert promoted.returncode == 0 and denied.returncode == 1 and invalid.returncode == 1
    ok, refused, bad = audit_lines()
    for line in (ok, refused, bad):
        assert line["audit"] is True and line["rpc"] == "Promote" and line["action"] == "promote"
        assert line["peer"].startswith("ipv4:127.0.0.1:") and "alice@ops.example" in line["subject"]
        assert line["common_name"] == "alice@ops.example" and line["model"] == "bandwidth_predictor"
    assert ok["code"] == "OK" and ok["level"] == "INFO" and ok["arguments"] == {"label": "canary", "version": "1"}
    assert "canary" not in ok["policy_before"]["labels"] and ok["policy_after"]["labels"]["canary"] == "1"
    assert refused["code"] == "UNAUTHENTICATED" and refused["token"] == "wrong" and refused["level"] == "WARNING"
    assert bad["code"] == "INVALID_ARGUMENT" and "99" in bad["details"]
    assert bad["policy_before"] == bad["policy_after"] == ok["policy_after"]
