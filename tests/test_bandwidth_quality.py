"""The bandwidth forecaster on unseen traces (training/bandwidth_quantile.py): its scale-free multi-scale features
compute the same in features.py and in the ONNX feature graph, and trained on some mahimahi drives it beats the
harmonic mean on others, with a calibrated p10, through the real `train` and `evaluate --all` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dwcp_inference import features as F
from dwcp_inference.features import Feature
from dwcp_inference.metadata import TensorSpec

from .conftest import SHARED_DATA
from .test_feature_graph import NUMERIC, _graph_features, _meta, _raw_cases

CLI = str(Path(sys.executable).parent / "dwcp-inference")
WINDOW = 30
TAIL_SPECS = {
    "tail_log_mean, last value": [Feature("f", "v", "tail_log_mean", span=1, mean=1.0, std=2.0)],
    "tail_log_mean, whole window": [Feature("f", "v", "tail_log_mean", span=WINDOW, mean=-1.0, std=3.0)],
    "tail_rel_log_mean": [Feature("f", "v", "tail_rel_log_mean", span=5, mean=-0.1, std=0.4)],
    "tail_rel_log_std": [Feature("f", "v", "tail_rel_log_std", span=WINDOW, mean=0.3, std=0.2)],
    "all together": [Feature("a", "v", "tail_log_mean", span=WINDOW),
                     *[Feature(f"r{k}", "v", "tail_rel_log_mean", span=k) for k in (1, 3, 10)],
                     Feature("s", "v", "tail_rel_log_std", span=5)],
}


@pytest.mark.parametrize("case", list(TAIL_SPECS))
def test_tail_transforms_in_the_graph_match_features_py(case):
    features = TAIL_SPECS[case]
    meta = _meta(features, [NUMERIC], WINDOW)
    meta.inputs = [TensorSpec("features", "float32", (None, len(features)))]
    columns = _raw_cases(WINDOW, np.random.default_rng(len(case)))
    F.validate_raw(meta.raw_fields, columns)
    want = F.transform(features, columns)
    got = _graph_features(meta, columns)
    assert got.dtype == np.float32 and got.shape == want.shape == (len(columns["v"]), len(features))
    assert np.isfinite(want).all()  # outages (all-zero windows) included
    diff = float(np.max(np.abs(got.astype(np.float64) - want)))
    print(f"{case}: max abs diff {diff:.3g} over {want.size} values")
    assert diff <= 1e-5


def test_tail_features_are_scale_free_and_round_trip_through_metadata():
    rng = np.random.default_rng(3)
    window = rng.uniform(0.5, 2.0, size=(50, WINDOW))
    rel = [Feature(f"r{k}", "v", "tail_rel_log_mean", span=k) for k in (1, 5)] + \
        [Feature("s", "v", "tail_rel_log_std", span=WINDOW)]
    assert np.allclose(F.transform(rel, {"v": window}), F.transform(rel, {"v": window * 1000}), atol=1e-6)
    level = Feature("l", "v", "tail_log_mean", span=WINDOW)
    assert np.allclose(F.transform([level], {"v": window * 1000})[:, 0] - F.transform([level], {"v": window})[:, 0],
                       np.log(1000), atol=1e-5)
    for f in [*rel, level]:
        assert Feature.from_dict(f.to_dict()) == f
    with pytest.raises(ValueError, match="span"):
        Feature.from_dict({"name": "x", "source": "v", "transform": "tail_rel_log_mean"})


def test_validation_holds_out_a_drives_up_and_down_links_together():
    from dwcp_inference.training.bandwidth_quantile import link_groups

    rows = {"ATT.up": 100, "ATT.down": 90, "UMTS.down": 80, "EVDO.up": 70, "EVDO.down": 60, "short-trace": 50}
    links = np.array([link for link, n in rows.items() for _ in range(n)])
    groups = dict(zip(links, link_groups(links, rows)))
    assert groups["ATT.up"] == groups["ATT.down"] and groups["EVDO.up"] == groups["EVDO.down"]
    assert len({groups["ATT.up"], groups["UMTS.down"], groups["EVDO.up"], groups["short-trace"]}) == 4


LTE = ("ATT-LTE-driving.down", "ATT-LTE-driving.up", "TMobile-LTE-driving.down")
OTHERS = ("TMobile-UMTS-driving.down", "TMobile-UMTS-driving.up", "Verizon-EVDO-driving.down",
          "Verizon-EVDO-driving.up")


@pytest.fixture(scope="module")
def drives(tmp_path_factory) -> dict[str, Path]:
    """The mahimahi drives in two folders: the LTE ones (training) and the others (never seen in training)."""
    source = SHARED_DATA / "bandwidth"
    if not source.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{source} is missing, and CI must run the real-data tests")
        pytest.skip(f"{source} is absent: the real-data tests need ../shared/data")
    root = tmp_path_factory.mktemp("drives")
    folders = {}
    for name, traces in (("lte", LTE), ("others", OTHERS)):
        (root / name).mkdir()
        for t in traces:
            (root / name / t).symlink_to(source / t)
        folders[name] = root / name
    return folders


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=900)


def test_trained_on_some_drives_it_beats_the_baselines_on_the_others(drives, tmp_path):
    repo = tmp_path / "repo"
    trained = _cli("train", "bandwidth", "--data", str(drives["lte"]), "--format", "mahimahi", "--out", str(repo),
                   "--force")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "validation on held-out links (2 groups of whole drives, 2 drives of 3 links" in trained.stdout
    assert "vs last_value" in trained.stdout and "vs harmonic_mean_5" in trained.stdout  # by how much, each
    meta = json.loads((repo / "bandwidth_predictor" / "1" / "metadata.json").read_text())
    assert meta["training"]["links"] == sorted(LTE) and meta["window"] == WINDOW
    assert sorted(meta["metrics"]["validation_groups"]) == [sorted(LTE[:2]), [LTE[2]]]  # a drive's links together
    assert [t["name"] for t in meta["targets"]] == ["bandwidth_mbps", "bandwidth_mbps_p10", "bandwidth_mbps_p50",
                                                     "bandwidth_mbps_p90"]

    out = _cli("evaluate", "bandwidth", "--repository", str(repo), "--data", str(drives["others"]),
               "--format", "mahimahi", "--all", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    rows, ci = result["rows"], result["ci95"]
    print(json.dumps(rows, indent=1), json.dumps(ci, indent=1))
    assert set(result["per_link"]) == set(OTHERS) and result["windows"] == 3869
    ours = rows["mlp (ours)"]
    assert ours["mape_pct"] < rows["last_value"]["mape_pct"]
    assert ours["mape_pct"] < 0.8 * rows["harmonic_mean_5"]["mape_pct"]
    assert ours["below_p10_pct"] <= 12.0  # the cautious forecast a transport can lean on
    assert ci["MAPE reduction vs harmonic_mean_5 %"]["ci95_low"] > 0

    again = _cli("evaluate", "bandwidth", "--repository", str(repo), "--data", str(drives["lte"]),
                 "--format", "mahimahi", "--all")
    assert again.returncode == 2 and "were used in training" in again.stderr and "Traceback" not in again.stderr

    _served_point_is_the_models(repo, drives["others"] / "Verizon-EVDO-driving.up")


def _served_point_is_the_models(repo: Path, trace: Path) -> None:
    """A real server answers PredictBandwidth with the version's point forecast (the graph's first output) and a
    confidence in [0, 1]; the quantiles stay in the model's outputs (the proto has no field for them yet)."""
    import grpc
    import onnxruntime as ort

    from dwcp_inference.api import inference_pb2 as pb
    from dwcp_inference.api import inference_pb2_grpc as pb_grpc
    from dwcp_inference.training.data.real import mahimahi_throughput

    from .conftest import start_server

    bw = mahimahi_throughput(trace)
    windows = np.stack([bw[i:i + WINDOW] for i in range(0, 600, 37)])
    session = ort.InferenceSession(str(repo / "bandwidth_predictor" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    want = session.run(["next"], {"bandwidth_mbps": windows})[0]
    assert (want[:, 1] <= want[:, 2]).all() and (want[:, 2] <= want[:, 3]).all()  # p10 <= p50 <= p90
    running = start_server(repo)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            histories = [pb.LinkHistory(samples=[pb.NetworkSample(bandwidth_mbps=float(v)) for v in w])
                         for w in windows]
            got = stub.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(histories=histories), timeout=30)
    finally:
        running.stop(0)
    served = np.array([p.predicted_bandwidth_mbps for p in got.predictions])
    assert np.allclose(served, want[:, 0], rtol=1e-5, atol=1e-6)
    assert all(0.0 <= p.confidence <= 1.0 for p in got.predictions)


def test_the_stated_interval_coverage_is_measured_on_rows_its_calibration_never_saw():
    """Each drive group's interval is calibrated on the other groups' held-out forecasts, so the coverage the version
    states (its `confidence`) is out of sample: calibrated and measured on the same rows it is nominal by
    construction. A group's calibrated forecasts do not move when its own actuals do."""
    from dwcp_inference.training.bandwidth_quantile import calibration, cross_fitted

    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], 400)
    pred = np.column_stack([np.full(1200, 10.0)] * 4) * [1.0, 0.7, 1.0, 1.3]
    y = 10.0 * np.exp(rng.normal(0, np.where(groups == 2, 0.6, 0.1)))  # the third drive far noisier
    out = cross_fitted(y, pred, groups)
    moved = y.copy()
    moved[groups == 2] *= 3.0
    np.testing.assert_array_equal(cross_fitted(moved, pred, groups)[groups == 2], out[groups == 2])
    np.testing.assert_allclose(out[groups == 0], pred[groups == 0] * calibration(y[groups != 0], pred[groups != 0]))
    inside = (y >= out[:, 1]) & (y <= out[:, 3])
    assert inside[groups == 2].mean() < 0.6 < 0.95 < inside[groups == 0].mean()  # each judged by the others
