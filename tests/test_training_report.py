"""What `train` tells a person: one held-out table per model, progress with times and an ETA, a report that
keeps a held-back model's section, Markdown tables that stay tables, plots a person can read; and compression
labels that do not move between `train` and `evaluate`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dwcp_inference.training.data import generators
from dwcp_inference.training.evaluation import table

CLI = [sys.executable, "-m", "dwcp_inference.commands.cli"]


def _cells(row: str) -> list[str]:
    """A Markdown table row's cells, split on | not escaped with a backslash (as CommonMark tables do)."""
    return re.split(r"(?<!\\)\|", row.strip().strip("|"))


def test_markdown_tables_escape_pipes_in_cells():
    md = table("t", {"static threshold (any |z| > 3)": {"recall": 1.0, "f1": 0.5}, "ours": {"recall": 0.9}},
               ["recall", "f1"])
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert {len(_cells(r)) for r in rows} == {3}, md
    assert r"static threshold (any \|z\| > 3)" in md


def _unlearnable_reliability_csv(path: Path) -> Path:
    """Node metrics whose labels carry no signal: the detector cannot reach its recall target."""
    cols = generators.node_metrics(nodes=10, steps=300, seed=2)
    cols["is_anomaly"] = np.random.default_rng(0).permutation(cols["is_anomaly"])
    names = [k for k in cols if k not in ("node_id", "step", "severity")]
    np.savetxt(path, np.column_stack([cols[k] for k in names]), delimiter=",", header=",".join(names),
               comments="", fmt="%.6g")
    return path


def _dpi(png: Path) -> float:
    from PIL import Image

    with Image.open(png) as im:
        return float(im.info["dpi"][0])


def test_a_held_back_model_keeps_its_report_section(tmp_path):
    data = _unlearnable_reliability_csv(tmp_path / "nodes.csv")
    proc = subprocess.run([*CLI, "train", "reliability", "--data", str(data), "--out", str(tmp_path / "repo"),
                           "--report", str(tmp_path / "report")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert not any((tmp_path / "repo" / "reliability_detector").glob("[0-9]*"))  # not published
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## reliability_detector: held back, not published" in md
    assert re.search(r"Held back by the promotion gate:\*\* reliability_detector not published: recall", md)
    assert "| gradient_boosting" in md and "![reliability_detector](reliability_detector.png)" in md
    assert _dpi(tmp_path / "report" / "reliability_detector.png") >= 150
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["published"] == [] and [r["model"] for r in report["held_back"]] == ["reliability_detector"]
    assert "recall" in report["not_published"]["reliability_detector"]
    # One held-out table on the console, not one from the job and another from the command.
    assert proc.stdout.count("### reliability_detector: held-out") == 1, proc.stdout


def test_a_held_back_model_keeps_its_result_through_parallel_workers(tmp_path):
    from dwcp_inference.training import jobs

    data = _unlearnable_reliability_csv(tmp_path / "nodes.csv")
    results, held = jobs.run_all(("reliability",), tmp_path / "repo", workers=1, data=data)
    assert list(held) == ["reliability_detector"]
    assert [r["model"] for r in results] == ["reliability_detector"]
    assert results[0]["held_back"] == held["reliability_detector"] and "curves" in results[0]


def test_epochs_log_their_time_and_an_eta(capsys):
    import torch

    from dwcp_inference.training.loop import fit

    x = torch.randn(64, 3)
    y = x.sum(dim=1, keepdim=True)
    model = torch.nn.Linear(3, 1)
    fit(model, lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]), (x, y), (x, y), epochs=3, name="probe")
    lines = [line for line in capsys.readouterr().out.splitlines() if "epoch" in line]
    assert len(lines) == 3
    assert all(re.search(r"\d+\.\ds/epoch  eta \d+\.\ds", line) for line in lines), lines


def _payload_corpus(directory: Path) -> Path:
    """A small corpus of generated payloads: text, records, tables and noise, mixed, in a few files."""
    from dwcp_inference.training.data.payloads import synthetic_chunks

    directory.mkdir()
    chunks = synthetic_chunks(24, seed=5)
    for i in range(4):
        (directory / f"payload-{i}.bin").write_bytes(b"".join(chunks[i::4]))
    return directory


def test_compression_labels_are_measured_once_and_reused(tmp_path, monkeypatch):
    from dwcp_inference.training.data import payloads, real

    monkeypatch.setenv("DWCP_INFERENCE_CACHE", str(tmp_path / "cache"))
    files = real.payload_files(_payload_corpus(tmp_path / "corpus"))
    first = payloads.measure_files(files)
    assert len(list((tmp_path / "cache" / "compression-timings").glob("*.npz"))) == len(files)
    monkeypatch.setattr(payloads, "measure", lambda *a, **k: pytest.fail("measured again despite the cache"))
    again = payloads.measure_files(files)
    for a, b in zip(first[3:], again[3:]):
        assert np.array_equal(a, b)
    assert np.all(first[4][:, 1:] > 0)  # every codec's CPU time was measured


def test_train_and_evaluate_report_the_same_selector_accuracy(tmp_path):
    """The labels come from stored measurements, so `evaluate` on the data `train` used sees the figures of the
    training report, not ones re-timed under another load."""
    corpus = _payload_corpus(tmp_path / "corpus")
    env = {**__import__("os").environ, "DWCP_INFERENCE_CACHE": str(tmp_path / "cache")}
    train = subprocess.run([*CLI, "train", "compression", "--data", str(corpus), "--format", "payloads", "--quick",
                            "--force", "--out", str(tmp_path / "repo"), "--report", str(tmp_path / "report")],
                           capture_output=True, text=True, timeout=600, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    trained = json.loads((tmp_path / "report" / "report.json").read_text())["published"][0]["test"]
    evaluate = subprocess.run([*CLI, "evaluate", "compression", "--repository", str(tmp_path / "repo"), "--data",
                               str(corpus), "--format", "payloads", "--json"],
                              capture_output=True, text=True, timeout=600, env=env)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    evaluated = json.loads(evaluate.stdout)["rows"]
    for policy in ("mlp (ours)", "always none", "always zstd-3", "dwcp heuristic"):
        assert evaluated[policy]["accuracy"] == pytest.approx(trained[policy]["accuracy"]), policy
        assert evaluated[policy]["throughput_regret_pct"] == pytest.approx(
            trained[policy]["throughput_regret_pct"], rel=1e-6), policy
