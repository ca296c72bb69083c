"""Live accuracy from outcomes: signed prediction ids any replica can judge, refused when altered, foreign,
expired or replayed; rolling figures that one outlier cannot poison and that say nothing rather than 0."""

import base64
import tracemalloc

import pytest

from dwcp_inference.services.errors import InvalidInput, PredictionNotFound
from dwcp_inference.services.metrics import Metrics
from dwcp_inference.services.outcomes import APE_CAP_PCT, OutcomeTracker
from dwcp_inference.services.prediction_ids import OutcomeKeyError, Signer, read_key

KEY = b"k" * 32


def _series(metrics, name="dwcp_inference_live_accuracy"):
    return {(s.labels.get("model"), s.labels.get("version"), s.labels.get("metric")): s.value
            for m in metrics.registry.collect() for s in m.samples if s.name == name}


def test_every_kind_of_prediction_is_judged_once():
    t = OutcomeTracker(Metrics(), KEY)
    bw = t.remember("bandwidth_predictor", "3", 120.0)
    sel = t.remember("compression_selector", "1", ("zstd", 3))
    det = t.remember("reliability_detector", "2", True)
    assert t.report(bw, "actual_network", 100.0) == ("bandwidth_predictor", "3")
    assert t.live("bandwidth_predictor", "3") == ({"mape": pytest.approx(20.0)}, 1)
    t.report(sel, "best_choice", (("zstd", 3), {("zstd", 3): 1.0, ("none", 0): 2.0}))
    assert t.live("compression_selector", "1")[0] == {"accuracy": 1.0, "regret_pct": 0.0}
    t.report(det, "was_anomaly", False)
    assert t.live("reliability_detector", "2")[0] == {"precision": 0.0}  # a false alarm; recall: no positive yet
    with pytest.raises(PredictionNotFound, match="already reported"):
        t.report(bw, "actual_network", 100.0)


def test_any_tracker_with_the_key_judges_an_id_and_no_other():
    made_here, elsewhere, foreign = OutcomeTracker(Metrics(), KEY), OutcomeTracker(Metrics(), KEY), \
        OutcomeTracker(Metrics(), b"x" * 32)
    pid = made_here.remember("compression_selector", "7", ("lz4", 1))
    assert len(made_here.remember("bandwidth_predictor", "1", 512.5)) == 48
    with pytest.raises(PredictionNotFound, match="signed with another outcome key"):
        foreign.report(pid, "best_choice", (("lz4", 1), {}))
    assert elsewhere.report(pid, "best_choice", (("lz4", 1), {})) == ("compression_selector", "7")


def test_a_wrong_kind_of_outcome_leaves_the_prediction_to_report():
    t = OutcomeTracker(Metrics(), KEY)
    pid = t.remember("consensus_latency", "1", False)
    with pytest.raises(InvalidInput, match="judged by was_anomaly, got actual_network"):
        t.report(pid, "actual_network", 5.0)
    assert t.report(pid, "was_anomaly", False) == ("consensus_latency", "1")


def test_altered_guessed_and_malformed_ids_are_not_found():
    t = OutcomeTracker(Metrics(), KEY)
    pid = t.remember("bandwidth_predictor", "1", 10.0)
    raw = bytearray(base64.urlsafe_b64decode(pid + "=" * (-len(pid) % 4)))
    raw[14] ^= 1  # the version's first byte... or any other: the MAC covers every byte
    altered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad in (altered, pid[:-2], pid + "AA", "0" * 32, "f" * 17, "", "!!!!", "x" * 500, pid.upper()):
        with pytest.raises(PredictionNotFound, match="prediction_id"):
            t.report(bad, "actual_network", 10.0)
    assert t.report(pid, "actual_network", 10.0)


def test_an_id_older_than_the_max_age_is_expired():
    now = [1_800_000_000.0]
    t = OutcomeTracker(Metrics(), KEY, max_age_seconds=3600, clock=lambda: now[0])
    old, fresh = t.remember("reliability_detector", "1", False), None
    now[0] += 1800
    fresh = t.remember("reliability_detector", "1", False)
    now[0] += 1801
    with pytest.raises(PredictionNotFound, match="expired"):
        t.report(old, "was_anomaly", False)
    assert t.report(fresh, "was_anomaly", False)


def test_a_short_or_missing_key_file_is_refused_with_the_flag_named(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(b"0123456789\n")
    with pytest.raises(OutcomeKeyError, match=r"--outcome-key-file .*short: the key is 10 bytes, expected at least 16"):
        read_key(short)
    with pytest.raises(OutcomeKeyError, match="cannot read it"):
        read_key(tmp_path / "absent")
    good = tmp_path / "good"
    good.write_text("0123456789abcdef0123\n")
    assert Signer(read_key(good)).open(Signer(b"0123456789abcdef0123").sign_many("consensus_latency", "1", [True], 1)[0])


def test_with_only_true_negatives_precision_and_recall_are_absent_until_a_positive():
    metrics = Metrics()
    t = OutcomeTracker(metrics, KEY)
    for _ in range(3):
        t.report(t.remember("reliability_detector", "2", False), "was_anomaly", False)
    assert t.live("reliability_detector", "2") == ({}, 3)
    assert not [k for k in _series(metrics) if k[0] == "reliability_detector"]
    assert _series(metrics, "dwcp_inference_outcomes_total")[("reliability_detector", "2", None)] == 3
    t.report(t.remember("reliability_detector", "2", True), "was_anomaly", True)
    assert t.live("reliability_detector", "2")[0] == {"precision": 1.0, "recall": 1.0}
    assert _series(metrics)[("reliability_detector", "2", "recall")] == 1.0


def test_one_extreme_outcome_cannot_poison_the_mape():
    t = OutcomeTracker(Metrics(), KEY)
    t.report(t.remember("bandwidth_predictor", "1", 500.0), "actual_network", 1e-300)
    assert t.live("bandwidth_predictor", "1")[0]["mape"] == APE_CAP_PCT
    for _ in range(999):
        t.report(t.remember("bandwidth_predictor", "1", 105.0), "actual_network", 100.0)
    mape = t.live("bandwidth_predictor", "1")[0]["mape"]
    assert 5.0 < mape < 6.0, mape  # (1000 + 999 * 5) / 1000


def test_memory_stays_put_once_the_replay_memory_is_full():
    t = OutcomeTracker(Metrics(), KEY, replay_memory=20_000)
    models = [("bandwidth_predictor", 50.0), ("compression_selector", ("lz4", 1)), ("consensus_latency", True)]

    def churn(n):
        for i in range(n):
            model, value = models[i % 3]
            pid = t.remember(model, "1", value)
            kind = {"bandwidth_predictor": "actual_network", "compression_selector": "best_choice"}.get(
                model, "was_anomaly")
            actual = {"actual_network": 40.0, "best_choice": (("lz4", 1), {})}.get(kind, True)
            t.report(pid, kind, actual)

    tracemalloc.start()  # before the replay memory fills: its nonces are then traced in both snapshots
    churn(40_000)
    before = tracemalloc.take_snapshot()
    churn(60_000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 200_000, f"{grown} bytes more after 60,000 outcomes"


def test_an_unloaded_version_leaves_no_figures_or_series_behind():
    metrics = Metrics()
    t = OutcomeTracker(metrics, KEY)
    t.report(t.remember("bandwidth_predictor", "4", 100.0), "actual_network", 90.0)
    metrics.child(metrics.latency, "PredictBandwidth", "bandwidth_predictor", "4").observe(0.001)

    def series(version):
        return [s for m in metrics.registry.collect() for s in m.samples if s.labels.get("version") == version]

    assert series("4") and t.live("bandwidth_predictor", "4")[1] == 1
    t.forget("bandwidth_predictor", "4")
    metrics.forget_version("bandwidth_predictor", "4")
    assert series("4") == [] and t.live("bandwidth_predictor", "4") == ({}, 0)
