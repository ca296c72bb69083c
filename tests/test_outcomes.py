"""The store of remembered predictions: ids, reuse of slots, and memory that does not grow with traffic."""

import tracemalloc

import pytest

from dwcp_inference.services.errors import InvalidInput, PredictionNotFound
from dwcp_inference.services.metrics import Metrics
from dwcp_inference.services.outcomes import OutcomeTracker


def test_every_kind_of_prediction_comes_back_once():
    t = OutcomeTracker(Metrics(), capacity=8)
    bw = t.remember("bandwidth_predictor", "3", 120.0)
    sel = t.remember("compression_selector", "1", ("zstd", 3))
    det = t.remember("reliability_detector", "2", True)
    assert t.report(bw, "actual_network", 100.0) == ("bandwidth_predictor", "3")
    assert t.live("bandwidth_predictor", "3") == ({"mape": pytest.approx(20.0)}, 1)
    t.report(sel, "best_choice", (("zstd", 3), {("zstd", 3): 1.0, ("none", 0): 2.0}))
    assert t.live("compression_selector", "1")[0] == {"accuracy": 1.0, "regret_pct": 0.0}
    t.report(det, "was_anomaly", False)
    assert t.live("reliability_detector", "2")[0] == {"precision": 0.0, "recall": 0.0}
    with pytest.raises(PredictionNotFound, match="already reported"):
        t.report(bw, "actual_network", 100.0)


def test_a_wrong_kind_of_outcome_leaves_the_prediction_to_report():
    t = OutcomeTracker(Metrics(), capacity=8)
    pid = t.remember("consensus_latency", "1", False)
    with pytest.raises(InvalidInput, match="judged by was_anomaly, got actual_network"):
        t.report(pid, "actual_network", 5.0)
    assert t.report(pid, "was_anomaly", False) == ("consensus_latency", "1")


def test_old_guessed_and_malformed_ids_are_not_found():
    t = OutcomeTracker(Metrics(), capacity=4)
    first = t.remember("bandwidth_predictor", "1", 10.0)
    later = [t.remember("bandwidth_predictor", "1", 10.0) for _ in range(4)]  # the fifth reuses first's slot
    assert first[16:] == later[-1][16:] and first != later[-1]
    for pid in (first, "0" * 17, "f" * 32, "zz" * 9, "", "1", later[0][:16] + "9", "x" * 500):
        with pytest.raises(PredictionNotFound):
            t.report(pid, "actual_network", 10.0)
    assert t.report(later[0], "actual_network", 10.0)


def test_memory_stays_put_once_the_store_is_full():
    t = OutcomeTracker(Metrics(), capacity=20_000)
    models = [("bandwidth_predictor", 50.0), ("compression_selector", ("lz4", 1)), ("consensus_latency", True)]

    def churn(n):
        for i in range(n):
            model, value = models[i % 3]
            pid = t.remember(model, "1", value)
            if i % 2:
                kind = {"bandwidth_predictor": "actual_network", "compression_selector": "best_choice"}.get(
                    model, "was_anomaly")
                actual = {"actual_network": 40.0, "best_choice": (("lz4", 1), {})}.get(kind, True)
                t.report(pid, kind, actual)

    churn(40_000)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    churn(100_000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 200_000, f"{grown} bytes more after 100,000 predictions"


def test_an_unloaded_version_leaves_no_figures_or_series_behind():
    metrics = Metrics()
    t = OutcomeTracker(metrics, capacity=8)
    t.report(t.remember("bandwidth_predictor", "4", 100.0), "actual_network", 90.0)
    metrics.child(metrics.latency, "PredictBandwidth", "bandwidth_predictor", "4").observe(0.001)

    def series(version):
        return [s for m in metrics.registry.collect() for s in m.samples if s.labels.get("version") == version]

    assert series("4") and t.live("bandwidth_predictor", "4")[1] == 1
    t.forget("bandwidth_predictor", "4")
    metrics.forget_version("bandwidth_predictor", "4")
    assert series("4") == [] and t.live("bandwidth_predictor", "4") == ({}, 0)
