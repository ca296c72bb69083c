"""`dwcp-inference evaluate --all` through the real command: every window of data the version never saw is
scored, with bootstrap intervals; data lacking a field the version reads is one line naming it, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BUNDLED = Path(__file__).resolve().parents[1] / "dwcp_inference" / "models"
CLI = str(Path(sys.executable).parent / "dwcp-inference")
WINDOW = 24  # the bundled bandwidth LSTM's


def _links_csv(path: Path, rows_per_link: dict[str, int]) -> Path:
    """Link samples in the documented CSV schema (docs/data.md), a minute apart."""
    rng = np.random.default_rng(7)
    lines = ["link_id,timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms"]
    for link, n in rows_per_link.items():
        bw = 400 * np.exp(np.cumsum(rng.normal(0, 0.05, n)))
        for i in range(n):
            lines.append(f"{link},{1767571200 + 60 * i},{bw[i]:.3f},{20 + rng.random():.3f},{0.001 * rng.random():.5f},"
                         f"{1 + rng.random():.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "evaluate", "bandwidth", "--repository", str(BUNDLED), *args],
                          capture_output=True, text=True, timeout=300)


def test_all_scores_every_window_with_bootstrap_intervals(tmp_path):
    data = _links_csv(tmp_path / "links.csv", {"a": 130, "b": 90, "c": 60})
    every = _evaluate("--data", str(data), "--all", "--json")
    assert every.returncode == 0, every.stderr
    result = json.loads(every.stdout)
    assert result["windows"] == (130 - WINDOW) + (90 - WINDOW) + (60 - WINDOW)
    assert {link: row["windows"] for link, row in result["per_link"].items()} == {"a": 130 - WINDOW, "b": 90 - WINDOW,
                                                                                 "c": 60 - WINDOW}
    ci = result["ci95"]
    for figure in ("MAPE lstm (ours) %", "MAPE last_value %", "MAPE harmonic_mean_5 %",
                   "MAPE reduction vs last_value %", "MAPE reduction vs harmonic_mean_5 %"):
        assert ci[figure]["ci95_low"] <= ci[figure]["value"] <= ci[figure]["ci95_high"], figure
    assert ci["MAPE last_value %"]["value"] == result["rows"]["last_value"]["mape_pct"]
    split = _evaluate("--data", str(data), "--json")  # the default stays the training split: the last 15%
    assert split.returncode == 0, split.stderr
    assert json.loads(split.stdout)["windows"] < result["windows"] // 4
    text = _evaluate("--data", str(data), "--all")
    assert "every window held out (208 windows over 3 traces" in text.stdout
    assert "95% bootstrap intervals" in text.stdout and "blocks of 60 consecutive windows" in text.stdout


def test_data_lacking_a_field_the_version_reads_is_one_line_and_exit_2(tmp_path):
    trace = tmp_path / "drive.down"  # mahimahi: bandwidth alone; the bundled LSTM also reads latency and more
    trace.write_text("\n".join(str(t) for t in range(0, 60000, 7)) + "\n")
    for extra in ((), ("--all",)):
        out = _evaluate("--data", str(trace), "--format", "mahimahi", *extra)
        assert out.returncode == 2, (out.stdout, out.stderr)
        lines = [line for line in out.stderr.splitlines() if "INFO" not in line]
        assert len(lines) == 1 and lines[0].startswith("dwcp-inference evaluate: latency_ms: missing"), out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""
