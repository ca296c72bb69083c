"""The command line, run as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dwcp_inference.services.settings import bundled_models
from .conftest import free_port

CLI = [sys.executable, "-m", "dwcp_inference.cli"]



@pytest.mark.parametrize("args", [[], ["serve"], ["train"], ["verify"], ["health"]])
def test_help_everywhere(args):
    out = subprocess.run([*CLI, *args, "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: dwcp-inference" in out


def test_bundled_models_verify():
    assert {p.name for p in bundled_models().iterdir() if p.is_dir()} == {
        "bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency"}
    size = sum(f.stat().st_size for f in bundled_models().rglob("*") if f.is_file())
    assert size < 10 << 20
    proc = subprocess.run([*CLI, "verify"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"refused": []' in proc.stdout


def test_serve_with_no_arguments_serves_the_bundled_models_and_drains_on_sigterm():
    port, metrics = free_port(), free_port()
    proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port",
                             str(metrics)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            health = subprocess.run([*CLI, "health", "--target", f"127.0.0.1:{port}"], capture_output=True,
                                    text=True)
            if health.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert health.returncode == 0, health.stdout
        model = subprocess.run([*CLI, "health", "--target", f"127.0.0.1:{port}", "--service", "consensus_latency"],
                               capture_output=True, text=True)
        assert model.returncode == 0 and "SERVING" in model.stdout
        unknown = subprocess.run([*CLI, "health", "--target", f"127.0.0.1:{port}", "--service", "nope"],
                                 capture_output=True, text=True)
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "dwcp-inference stopped" in out


def test_env_variables_set_serve_flags(monkeypatch):
    monkeypatch.setenv("DWCP_INFERENCE_PORT", "6000")
    out = subprocess.run([*CLI, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    assert "DWCP_INFERENCE_PORT" in out and "DWCP_INFERENCE_REPOSITORY" in out


def test_train_refuses_broken_csv_with_the_row(tmp_path: Path):
    bad = tmp_path / "nodes.csv"
    bad.write_text("error_rate\n0.1\nnot-a-number\n")
    proc = subprocess.run([*CLI, "train", "reliability", "--data", str(bad), "--out", str(tmp_path / "repo")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "missing columns" in proc.stderr
    assert not (tmp_path / "repo").exists()
