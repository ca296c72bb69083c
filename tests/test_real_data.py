"""Loaders and evaluation on the real data sets in ../shared/data (present in CI; skipped elsewhere without it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dwcp_inference.training.data import real
from dwcp_inference.training.data.csv_schema import DataError

from .conftest import SHARED_DATA


@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing, and CI must run the real-data tests")
        pytest.skip(f"{SHARED_DATA} is absent: the real-data tests need ../shared/data")
    return SHARED_DATA


def test_mahimahi_throughput_counts_packets_per_interval(tmp_path):
    trace = tmp_path / "t.down"
    trace.write_text("0\n0\n10\n999\n1000\n2500\n")
    assert real.mahimahi_throughput(trace, 1000).tolist() == pytest.approx([4 * 0.012, 0.012, 0.012])
    (tmp_path / "bad").write_text("5\n3\n")
    with pytest.raises(DataError, match="non-decreasing"):
        real.mahimahi_throughput(tmp_path / "bad")


def test_real_traces_load(shared):
    cols = real.mahimahi_columns(shared / "bandwidth", 1000)
    assert len(np.unique(cols["link_id"])) == 7
    assert 0 < np.median(cols["bandwidth_mbps"]) < 100


def test_nab_windows_label_rows(shared):
    series = real.nab_series(shared / "anomaly" / "nab")
    assert len(series) >= 10
    s = series[0]
    assert s.in_window.any() and not s.in_window.all()
    a, b = s.windows[0]
    assert np.all(s.in_window[(s.timestamp >= a) & (s.timestamp <= b)])


def test_payload_corpus_loads(shared):
    files = dict(real.payload_files(shared / "payloads"))
    assert "alice29.txt" in files and "LICENSE" not in files


def test_train_and_evaluate_bandwidth_on_a_real_trace(shared, tmp_path):
    trace = shared / "bandwidth" / "TMobile-UMTS-driving.up"
    repo = tmp_path / "repo"
    from dwcp_inference.training import bandwidth, jobs

    columns, extra = jobs.load("bandwidth", trace, "mahimahi", 1000)
    bandwidth.train(columns, repo, source="test", epochs=3, hidden=16, quiet=True, force=True, **extra)
    out = subprocess.run([sys.executable, "-m", "dwcp_inference.cli", "evaluate", "bandwidth", "--repository",
                          str(repo), "--data", str(trace), "--format", "mahimahi", "--json"],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert result["version"] == "1" and set(result["per_link"]) == {trace.name}
    rows = result["rows"]
    assert rows["lstm (ours)"]["mape_pct"] < rows["moving_average"]["mape_pct"]
    assert "met" in result["target"]


def test_train_and_evaluate_the_selector_on_the_payload_corpus(shared, tmp_path):
    from dwcp_inference.training import compression, jobs

    columns, _ = jobs.load("compression", shared / "payloads", "payloads")
    assert set(np.unique(columns["split"])) == {0, 1, 2}
    compression.train(columns, tmp_path, source="test", epochs=8, hidden=32, quiet=True, force=True)
    out = subprocess.run([sys.executable, "-m", "dwcp_inference.cli", "evaluate", "compression", "--repository",
                          str(tmp_path), "--data", str(shared / "payloads"), "--format", "payloads", "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)["rows"]
    assert rows["mlp (ours)"]["throughput_regret_pct"] < rows["always zstd-3"]["throughput_regret_pct"]
