"""The real Go client, compiled and run against a real server on the bundled models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dwcp_inference.services.settings import bundled_models

from .conftest import start_server

GO_MODULE = Path(__file__).resolve().parents[1] / "clients" / "go"
PACKAGES = ("inference", "prediction", "monitoring", "encoding", "consensus", "embedded")
# go vet ./... compiling clients/go/compat_test (DWCP's call shapes against our packages) is the compat test.


@pytest.fixture(scope="module")
def go() -> str:
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            pytest.fail("go is not installed, and CI must run the Go client's tests")
        pytest.skip("go is not installed: the Go client's tests need it")
    return go


def test_go_client_and_drop_in_packages_against_a_real_server(go):
    running = start_server(bundled_models(), metrics_port=-1)
    try:
        env = {**os.environ, "DWCP_INFERENCE_TARGET": f"127.0.0.1:{running.port}"}
        proc = subprocess.run([go, "test", "-count=1", "-v", "-skip", "^(TestFailover|TestTLS|TestOutcomesAcrossReplicas)$", "./..."], cwd=GO_MODULE, env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        running.stop(0)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "SKIP" not in out, out[-5000:]
    for pkg in PACKAGES:
        assert f"ok  \tgithub.com/dwcp/inference/clients/go/{pkg}" in out, out[-3000:]
    for example in ("ExampleLSTMPredictor", "ExampleInferenceDetector", "ExampleCompressionSelector",
                    "ExampleAnomalyDetector_CheckConsensusLatency"):
        assert f"--- PASS: {example}" in out


def test_go_tests_start_their_own_server_when_none_is_named(go):
    """Without DWCP_INFERENCE_TARGET the packages that need a server start `dwcp-inference serve` themselves."""
    binary = Path(sys.executable).with_name("dwcp-inference")
    env = {k: v for k, v in os.environ.items() if k != "DWCP_INFERENCE_TARGET"}
    env["DWCP_INFERENCE_BIN"] = str(binary)
    proc = subprocess.run([go, "test", "-count=1", "-v", "-run", "^(TestFollowsTheLink|ExampleLSTMPredictor)$",
                           "./prediction"], cwd=GO_MODULE, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "--- PASS: TestFollowsTheLink" in out and "--- PASS: ExampleLSTMPredictor" in out and "SKIP" not in out
    env["DWCP_INFERENCE_BIN"] = "/nonexistent/dwcp-inference"
    proc = subprocess.run([go, "test", "-count=1", "-run", "^TestFollowsTheLink$", "./prediction"], cwd=GO_MODULE,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "/nonexistent/dwcp-inference" in proc.stdout + proc.stderr


def test_shared_requests_and_retry_budget_under_the_race_detector(go):
    proc = subprocess.run([go, "test", "-race", "-count=1", "-v", "-run",
                           "^(TestSharedRequestIsNeverWritten|TestRetriesStopWhenTheBudgetIsSpent)$", "./inference"],
                          cwd=GO_MODULE, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "DATA RACE" not in out, out[-4000:]
    assert "--- PASS: TestSharedRequestIsNeverWritten" in out and "--- PASS: TestRetriesStopWhenTheBudgetIsSpent" in out


def test_go_vet_and_gofmt_are_clean(go):
    proc = subprocess.run([go, "vet", "./..."], cwd=GO_MODULE, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    gofmt = Path(go).with_name("gofmt")
    unformatted = subprocess.run([str(gofmt), "-l", "."], cwd=GO_MODULE, capture_output=True, text=True,
                                 check=True).stdout
    assert unformatted == "", f"gofmt -l lists: {unformatted}"


def test_the_drop_in_example_program_runs(go):
    running = start_server(bundled_models(), metrics_port=-1)
    try:
        proc = subprocess.run([go, "run", "./examples/dropin", "-target", f"127.0.0.1:{running.port}"],
                              cwd=GO_MODULE, capture_output=True, text=True, timeout=600)
    finally:
        running.stop(0)
    assert proc.returncode == 0, proc.stderr
    assert "model bandwidth_predictor:1" in proc.stdout
    assert "anomaly: " in proc.stdout and "error_rate" in proc.stdout


@pytest.mark.parametrize("target", ["FuzzFeatureLayouts", "FuzzAlgorithm"])
def test_go_fuzz_targets_find_nothing_in_a_short_run(go, target):
    # A count, not a duration: Go 1.26's fuzz coordinator can report "context deadline exceeded" as a failure when a
    # -fuzztime duration ends mid-run on a loaded machine (golang/go#75804, fixed in Go 1.27). 60,000 runs take
    # about 5 s here.
    proc = subprocess.run([go, "test", "-run", "^$", "-fuzz", f"^{target}$", "-fuzztime", "60000x", "./inference"],
                          cwd=GO_MODULE, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
