"""The features inside the exported ONNX graph (export/feature_graph.py): the same numbers as features.py for
every transform, on every newly published version, served like a version without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from dwcp_inference import features as F
from dwcp_inference import metadata
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.export import feature_graph, publish
from dwcp_inference.features import Feature, RawField
from dwcp_inference.metadata import ModelMetadata, TensorSpec
from dwcp_inference.raw_inputs import edge_columns, graph_feed_plan
from dwcp_inference.services.runtime import ModelRuntime

from . import samples
from .conftest import start_server

WINDOW = 30  # history transforms: 29 earlier values and the current one
CONTEXT = 12


def _meta(features: list[Feature], raw_fields: list[RawField], window: int) -> ModelMetadata:
    width = sum(f.width for f in features)
    shape = (None, window - CONTEXT, width) if any(f.transform == "context_z" for f in features) else \
        (None, window, width) if window > 1 and not any(f.transform in F.HISTORY_TRANSFORMS for f in features) \
        else (None, width)
    return ModelMetadata(name="reliability_detector", version="", framework={"name": "test"}, opset=17,
                         inputs=[TensorSpec("features", "float32", shape)], outputs=[], raw_fields=raw_fields,
                         features=features, window=window, targets=[], decision={}, metrics={}, training={})


def _identity_model(meta: ModelMetadata) -> onnx.ModelProto:
    """A 'trained model' that answers its input: the composed graph's output is then the features alone."""
    spec = meta.inputs[0]
    shape = ["batch" if d is None else d for d in spec.shape]
    graph = helper.make_graph([helper.make_node("Identity", ["features"], ["out"])], "identity",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _graph_features(meta: ModelMetadata, columns: dict[str, np.ndarray]) -> np.ndarray:
    composed = feature_graph.compose(meta, _identity_model(meta))
    meta.inputs = [TensorSpec(i.name, "", ()) for i in composed.graph.input]
    sess = ort.InferenceSession(composed.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["out"], {n: prep(columns[n]) for n, prep in graph_feed_plan(meta)})[0]


NUMERIC = RawField("v", 0.0, 1e9)
SPECS = {
    "identity": ([Feature("f", "v", "identity", mean=3.0, std=2.0)], 0),
    "log": ([Feature("f", "v", "log", mean=-7.5, std=1.2)], 0),
    "log1p": ([Feature("f", "v", "log1p", mean=6.3, std=1.1)], 0),
    "sin": ([Feature("f", "v", "sin", period=24, mean=0.01, std=0.7)], 0),
    "cos": ([Feature("f", "v", "cos", period=7, mean=-0.02, std=0.7)], 0),
    "windowed elementwise": ([Feature("a", "v", "log1p", mean=1.0, std=2.0),
                              Feature("b", "v", "sin", period=24, mean=0.0, std=0.7)], 24),
    "history_z": ([Feature("f", "v", "history_z", mean=0.1, std=1.3)], WINDOW),
    "history_robust_z": ([Feature("f", "v", "history_robust_z", mean=0.1, std=1.3)], WINDOW),
    "history_robust_z, odd history": ([Feature("f", "v", "history_robust_z")], WINDOW + 1),
    "history_short_z": ([Feature("f", "v", "history_short_z", mean=-0.2, std=0.9)], WINDOW),
    "history_diff_z": ([Feature("f", "v", "history_diff_z", mean=0.0, std=1.1)], WINDOW),
    "context_z": ([Feature("f", "v", "context_z", context=CONTEXT, mean=0.3, std=2.0)], WINDOW),
}


def _raw_cases(window: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random values over decades, and the edges: 0, the range's top, values near LOG_FLOOR, flat windows (a
    zero spread: the 1e-6 floor and the Z_LIMIT clip), a window that jumps from flat, ties for the median."""
    shape = (400, window) if window > 1 else (400,)
    random = 10.0 ** rng.uniform(-12, 9, size=shape) * (rng.random(size=shape) > 0.05)
    n = window if window > 1 else 1
    edges = [np.zeros(n), np.full(n, 1e9), np.full(n, F.LOG_FLOOR), np.full(n, 0.5 * F.LOG_FLOOR),
             np.full(n, 2 * F.LOG_FLOOR), np.full(n, 42.0), np.r_[np.full(n - 1, 42.0), 1e9][-n:],
             np.r_[np.full(n - 1, 1e9), 0.0][-n:], np.arange(n, dtype=float) % 3, np.linspace(0, 1e9, n),
             np.r_[np.zeros(n // 2), np.full(n - n // 2, 1e-3)], np.full(n, 23.0), np.full(n, 6.0), np.full(n, 12.0)]
    edges = np.array(edges) if window > 1 else np.array(edges)[:, 0]
    return {"v": np.concatenate([random, edges])}


@pytest.mark.parametrize("case", list(SPECS))
def test_every_transform_in_the_graph_matches_features_py(case):
    features, window = SPECS[case]
    meta = _meta(features, [NUMERIC], window)
    columns = _raw_cases(window, np.random.default_rng(len(case)))
    F.validate_raw(meta.raw_fields, columns)
    want = F.transform(features, columns)
    got = _graph_features(meta, columns)
    assert got.dtype == np.float32 and got.shape == want.shape
    diff = float(np.max(np.abs(got.astype(np.float64) - want)))
    print(f"{case}: max abs diff {diff:.3g} over {want.size} values")
    assert diff <= 1e-5


def test_one_hot_and_mixed_fields_in_the_graph_match_features_py():
    raw = [RawField("kind", vocabulary=("dc", "metro", "wan", "edge")), RawField("x", 0.0, 1.0),
           RawField("unused", 0.0, 5.0)]
    features = [Feature("x", "x", "log", mean=-3.0, std=2.0), Feature("kind", "kind", "one_hot",
                                                                      vocabulary=raw[0].vocabulary)]
    for window in (0, 20):
        meta = _meta(features, raw, window)
        meta.inputs = [TensorSpec("features", "float32", (None, window, 5) if window else (None, 5))]
        columns = feature_graph.sample_raw(meta, 300, np.random.default_rng(window))
        edges = edge_columns(raw, window)
        columns = feature_graph.concat_columns(columns, edges)
        want = F.transform(features, columns)
        got = _graph_features(meta, columns)
        assert got.shape == want.shape and float(np.max(np.abs(got - want))) <= 1e-5
        assert [i.name for i in meta.inputs] == ["kind", "x"]  # an unread raw field is no input


def test_every_trained_version_holds_its_features_and_verifies(trained_repo):
    for model in ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency"):
        vdir = trained_repo / model / "1"
        meta = metadata.read(vdir)
        assert meta.features_in_graph and meta.feature_output
        assert {t.name for t in meta.inputs} == {f.source for f in meta.features}
        parity = meta.metrics["parity"]["feature_graph"]
        print(model, parity)
        assert parity["raw_inputs"] >= publish.MIN_PARITY_INPUTS and parity["features"]["max_abs_error"] <= 1e-5
        assert all("raw" in v for v in meta.test_vectors)
        rt = ModelRuntime.load(vdir)  # the server's checks: tensor names, test vectors from raw, edge probe
        rt.pipeline.transform = None  # the Python feature pipeline is not used for such a version
        computed = rt.compute({k: np.asarray([v]) for k, v in meta.test_vectors[0]["raw"].items()})
        assert np.allclose(computed.features[0], meta.test_vectors[0]["input"], atol=1e-6)


def test_publish_refuses_a_feature_graph_the_framework_disagrees_with(trained_repo, tmp_path):
    src = trained_repo / "compression_selector" / "1"
    meta = metadata.read(src)
    onnx_bytes = (src / "model.onnx").read_bytes()
    x = np.asarray([v["input"] for v in meta.test_vectors] * 64, dtype=np.float32)
    trained = feature_graph.trained_part(onnx_bytes)
    ref = publish.run_onnx(trained, x)

    def framework(features: np.ndarray) -> dict[str, np.ndarray]:
        return {"probabilities": publish.run_onnx(trained, features)["probabilities"] + 1e-3}

    with pytest.raises(publish.ParityError, match="probabilities"):
        publish.publish(tmp_path, meta, onnx_bytes, x, ref, framework=framework)
    assert not (tmp_path / "compression_selector").exists()  # refused before anything was written


def _plain_copy(trained_repo: Path, repo: Path, model: str) -> None:
    """Version 1 as trained (with the feature graph), and version 2: the same trained model without it."""
    shutil.copytree(trained_repo / model / "1", repo / model / "1")
    meta = metadata.read(repo / model / "1")
    trained = feature_graph.trained_part((repo / model / "1" / "model.onnx").read_bytes())
    x = np.asarray([v["input"] for v in meta.test_vectors] * 64, dtype=np.float32)
    exact = ["label"] if model == "reliability_detector" else []
    out = publish.publish(repo, meta, trained, x, publish.run_onnx(trained, x), exact=exact, with_features=False)
    assert out.name == "2" and not metadata.read(out).features_in_graph


def _answers(stub: pb_grpc.InferenceServiceStub, version: str) -> list:
    sel = pb.ModelSelector(version=version)
    link, payload = samples.compression_query()
    replies = [
        stub.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(
            histories=[samples.link_history(bandwidth=b) for b in (5.0, 500.0, 9e5)], model=sel)).predictions,
        stub.SelectCompression(pb.SelectCompressionRequest(link=link, payload=payload, model=sel)).decision,
        stub.DetectAnomalyBatch(pb.DetectAnomalyBatchRequest(
            metrics=[samples.node_metrics(e, c) for e, c in ((0.004, 0.4), (0.6, 0.99), (0.0, 0.0))],
            model=sel)).verdicts,
        stub.DetectHighLatencyBatch(pb.DetectHighLatencyBatchRequest(
            windows=[samples.consensus_window(p99=p) for p in (5.0, 30.0, 4000.0)], model=sel)).verdicts,
    ]
    return replies


def _numbers(message) -> list:
    """Every field of an answer, numbers rounded to float32 precision (the two paths cast features alike, but
    onnxruntime may reorder a sum); ids and clock times left out."""
    from google.protobuf.json_format import MessageToDict

    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()
                    if k not in ("predictionId", "model", "validUntil", "predictionTime")}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return float(np.float32(v)) if isinstance(v, float) else v

    items = message if isinstance(message, list) else [message]
    return [walk(MessageToDict(m)) for m in items]


def test_the_server_answers_a_feature_graph_version_as_one_without(trained_repo, tmp_path):
    repo = tmp_path / "repo"
    for model in ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency"):
        _plain_copy(trained_repo, repo, model)
    running = start_server(repo, decoder="python")  # the decoder is not under test here (tests/test_decode*)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            with_graph, without = _answers(stub, "1"), _answers(stub, "2")
            for a, b in zip(with_graph, without):
                a, b = _numbers(list(a) if not hasattr(a, "ListFields") else a), \
                    _numbers(list(b) if not hasattr(b, "ListFields") else b)
                assert _close(a, b), [(x, y) for x, y in zip(a, b) if not _close(x, y)]
            # Bad raw input is refused before the model, with the field path, as for any version.
            history = samples.link_history()
            history.samples[12].bandwidth_mbps = -5
            with pytest.raises(grpc.RpcError) as e:
                stub.PredictBandwidth(pb.PredictBandwidthRequest(history=history, model=pb.ModelSelector(version="1")))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "history.samples[" in e.value.details() and "bandwidth_mbps: expected >= 0, got -5" in \
                e.value.details()
            reply = stub.DetectHighLatency(pb.DetectHighLatencyRequest(window=samples.consensus_window(),
                                                                       model=pb.ModelSelector(version="1")))
            assert reply.model.version == "1"
        # Drift is metered for the feature-graph version, from the features its graph answers.
        rt = running.repository.get("bandwidth_predictor", "1")
        assert rt.meta.features_in_graph and rt.drift.seen >= 1
        assert all(np.isfinite(v) and v > 0 for v in rt.drift.rms().values())
    finally:
        running.stop(0)


def _close(a, b, rel=1e-5) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) <= rel * (1 + abs(b))
    return a == b


def test_a_version_exported_before_the_feature_graph_still_serves(tmp_path):
    """A version as every repository holds it today (model.onnx takes the feature matrix; no features_in_graph
    key), beside the bundled one: both verify, serve, and answer alike."""
    import json

    from dwcp_inference.services.settings import bundled_models

    repo = tmp_path / "repo"
    for model in ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency"):
        _plain_copy(bundled_models(), repo, model)
        old = json.loads((repo / model / "2" / metadata.METADATA_FILE).read_text())
        assert "features_in_graph" not in old and len(old["inputs"]) == 1 and "raw" not in old["test_vectors"][0]
    running = start_server(repo, decoder="python")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            bundled, old = _answers(stub, "1"), _answers(stub, "2")
            assert len(old[0]) == 3 and old[1].choice.codec and len(old[3]) == 3
            for a, b in zip(bundled, old):
                a, b = _numbers(list(a) if not hasattr(a, "ListFields") else a), \
                    _numbers(list(b) if not hasattr(b, "ListFields") else b)
                assert _close(a, b), [(x, y) for x, y in zip(a, b) if not _close(x, y)]
        assert not running.repository.get("consensus_latency", "2").meta.features_in_graph
    finally:
        running.stop(0)


def test_an_imported_version_holds_its_features_checked_against_its_framework(tmp_path):
    from dwcp_inference.export.importer import import_model

    names = ["error_rate", "latency_p99_ms", "cpu_usage", "memory_usage"]
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 1], [0.5, -0.25, 1.0, 2.0])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["score"])], "detector",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
                              initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              tmp_path / "detector.onnx")
    (tmp_path / "features.json").write_text('["' + '", "'.join(names) + '"]')
    (tmp_path / "scaler.json").write_text('{"feature_names": ["' + '", "'.join(names) +
                                          '"], "mean": [0.01, 50, 0.5, 0.5], "scale": [0.01, 20, 0.2, 0.2]}')
    vdir = import_model("reliability", "onnx", tmp_path / "detector.onnx", tmp_path / "repo",
                        features_file=tmp_path / "features.json", scaler_file=tmp_path / "scaler.json", threshold=1.0)
    meta = metadata.read(vdir)
    assert meta.features_in_graph and [t.name for t in meta.inputs] == names
    parity = meta.metrics["parity"]["feature_graph"]
    assert parity["reference"] == "features.py + the framework" and parity["score"]["max_scaled_error"] <= 1e-4
    rt = ModelRuntime.load(vdir)
    columns = {n: np.array([0.02, 0.0, 1.0]) if n != "latency_p99_ms" else np.array([80.0, 0.0, 1e9]) for n in names}
    x, out = rt.infer(columns)
    want = F.transform(meta.features, columns) @ np.array([[0.5], [-0.25], [1.0], [2.0]], dtype=np.float32)
    assert np.allclose(out["score"], want, rtol=1e-5, atol=1e-6)
