"""Training smoke tests: each job, at quick size, learns (held-out error below a trivial baseline's), and is
reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from dwcp_inference.training.data import generators
from dwcp_inference.training.data.csv_schema import DataError, load_csv


def test_bandwidth_beats_the_moving_average(training_results):
    rows = training_results["bandwidth"]["test"]
    assert rows["lstm (ours)"]["mape_pct"] < rows["moving_average"]["mape_pct"]
    assert rows["lstm (ours)"]["mape_pct"] < rows["harmonic_mean_5"]["mape_pct"]


def test_compression_beats_fixed_choices(training_results):
    rows = training_results["compression"]["test"]
    ours = rows["mlp (ours)"]["throughput_regret_pct"]
    assert ours < rows["always none"]["throughput_regret_pct"]
    assert ours < rows["always zstd-3"]["throughput_regret_pct"]


def test_reliability_beats_a_static_threshold(training_results):
    rows = training_results["reliability"]["test"]
    served = next(v for k, v in rows.items() if k.endswith("(served)"))
    assert served["f1"] > rows["static threshold (any |z| > 3)"]["f1"]
    assert served["recall"] > 0.9


def test_consensus_beats_a_static_p99_threshold(training_results):
    rows = training_results["consensus"]["test"]
    assert rows["lstm autoencoder (ours)"]["accuracy"] > rows["static p99 threshold"]["accuracy"]


def test_generators_are_seeded():
    a, b = generators.node_metrics(nodes=5, steps=50, seed=3), generators.node_metrics(nodes=5, steps=50, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = generators.node_metrics(nodes=5, steps=50, seed=4)
    assert not np.array_equal(a["cpu_usage"], c["cpu_usage"])


def test_consensus_generator_has_all_four_anomaly_kinds():
    w = generators.consensus_windows(windows=400, seed=1)
    assert set(w["anomaly_kind"]) - {""} == set(generators.CONSENSUS_ANOMALIES)
    assert w["latency_p99_ms"].shape == (400, 20)


def test_bandwidth_has_daily_and_weekly_cycles():
    c = generators.network_samples(links=1, days=14, seed=0)
    bw, hour, day = c["bandwidth_mbps"], c["time_of_day"], c["day_of_week"]
    weekday = (day >= 1) & (day <= 5)
    assert bw[weekday & (hour == 14)].mean() < bw[weekday & (hour == 3)].mean()  # busy afternoons
    assert bw[~weekday & (hour == 14)].mean() > bw[weekday & (hour == 14)].mean()  # quieter weekends


def test_csv_loader_reads_the_schema_and_refuses_broken_data(tmp_path):
    good = tmp_path / "bw.csv"
    good.write_text("timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms\n"
                    "2026-01-05T10:00:00,100,20,0.001,1\n2026-01-05T10:05:00,120,21,0.002,2\n")
    cols = load_csv(good, "bandwidth_predictor")
    assert cols["time_of_day"].tolist() == [10, 10] and cols["day_of_week"].tolist() == [1, 1]  # a Monday
    assert cols["link_id"].tolist() == ["link-0", "link-0"]
    for body, message in [
        ("timestamp,bandwidth_mbps,latency_ms,packet_loss\n1,2,3,0\n", "missing columns"),
        ("timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms\n1,2,3,0,1\n2,x,3,0,2\n",
         "row 3, column bandwidth_mbps: 'x' is not a number"),
        ("timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms\n1,2,3,0,1\n2,nan,3,0,2\n", "not finite"),
        ("timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms\n1,2,3,0,1\n2,3,3,1.5,2\n", "outside"),
        ("timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms\n1,2,3,0,1\n2,2,4,0,2\n", "constant"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(body)
        with pytest.raises(DataError, match=message):
            load_csv(bad, "bandwidth_predictor")


def test_a_model_that_misses_its_targets_is_not_published_unless_forced(tmp_path):
    from dwcp_inference.training import reliability
    from dwcp_inference.training.common import GateError

    cols = generators.node_metrics(nodes=10, steps=300, seed=2)
    cols["is_anomaly"] = np.random.default_rng(0).permutation(cols["is_anomaly"])  # labels carry no signal
    with pytest.raises(GateError, match="not published: recall"):
        reliability.train(cols, tmp_path, source="test", trees=10, quiet=True)
    assert not any((tmp_path / "reliability_detector").glob("[0-9]*"))
    result = reliability.train(cols, tmp_path, source="test", trees=10, quiet=True, force=True)
    from dwcp_inference import metadata

    gate = metadata.read(tmp_path / "reliability_detector" / result["version"]).metrics["gate"]
    assert gate["forced"] and not gate["passed"] and gate["failures"]


def test_tune_shares_a_study_through_its_storage(tmp_path):
    from dwcp_inference.training import tune

    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    first = tune.tune("reliability", trials=2, storage=storage, size="quick")
    second = tune.tune("reliability", trials=2, storage=storage, size="quick")  # another machine, same study
    assert first["trials"] == 2 and second["trials"] == 4
    assert set(second["best_params"]) == {"trees", "max_depth"} and -1 <= second["best_value"] <= 0


def test_train_all_in_parallel_writes_a_report_with_plots(tmp_path):
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "train", "all", "--quick", "--force",
                           "--workers", "2", "--out", str(tmp_path / "repo"), "--report", str(tmp_path / "report"),
                           "--checkpoints", str(tmp_path / "ckpt")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {r["model"] for r in report["published"]} == {"bandwidth_predictor", "compression_selector",
                                                           "reliability_detector", "consensus_latency"}
    assert len(list((tmp_path / "report").glob("*.png"))) == 4
    assert "## consensus_latency v1" in (tmp_path / "report" / "report.md").read_text()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "bandwidth_predictor.pt", "compression_selector.pt", "consensus_latency.pt"]
