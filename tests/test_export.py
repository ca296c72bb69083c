"""Export: parity is checked, publishing is all or nothing."""

from __future__ import annotations

import numpy as np
import pytest

from dwcp_inference import metadata
from dwcp_inference.export import publish
from dwcp_inference.export.publish import ParityError, check_parity


def test_parity_report_meets_its_tolerance(trained_repo):
    for model, exact in (("bandwidth_predictor", False), ("compression_selector", False),
                         ("consensus_latency", False), ("reliability_detector", True)):
        meta = metadata.read(trained_repo / model / "1")
        parity = meta.metrics["parity"]
        assert parity["inputs"] >= publish.MIN_PARITY_INPUTS
        for name, figures in parity.items():
            if isinstance(figures, dict) and "max_scaled_error" in figures:
                assert figures["max_scaled_error"] <= meta.tolerance
        if exact:
            assert parity["label"]["mismatches"] == 0


def test_check_parity_fails_beyond_tolerance_and_on_any_decision():
    ref = {"y": np.zeros((300, 2))}
    check_parity({"y": np.full((300, 2), 1e-6)}, ref, 1e-5)
    with pytest.raises(ParityError, match="max abs error 0.001"):
        check_parity({"y": np.full((300, 2), 1e-3)}, ref, 1e-5)
    labels = np.zeros(300, dtype=np.int64)
    flipped = labels.copy()
    flipped[7] = 1
    with pytest.raises(ParityError, match="1 of 300 decisions differ"):
        check_parity({"label": flipped}, {"label": labels}, 1e-5, exact=["label"])


def test_publish_refuses_a_model_that_disagrees_and_leaves_nothing(trained_repo, tmp_path):
    src = trained_repo / "compression_selector" / "1"
    meta = metadata.read(src)
    onnx_bytes = (src / "model.onnx").read_bytes()
    x = np.random.default_rng(0).normal(size=(256, len(meta.feature_names))).astype(np.float32)
    wrong = {"probabilities": np.full((256, 6), 1 / 6)}
    with pytest.raises(ParityError):
        publish.publish(tmp_path, meta, onnx_bytes, x, wrong)
    assert not (tmp_path / "compression_selector").exists() or not list((tmp_path / "compression_selector").iterdir())


def test_publish_numbers_versions_and_leaves_no_staging(trained_repo, tmp_path):
    src = trained_repo / "compression_selector" / "1"
    onnx_bytes = (src / "model.onnx").read_bytes()
    x = np.random.default_rng(0).normal(size=(256, len(metadata.read(src).feature_names))).astype(np.float32)
    ref = publish.run_onnx(onnx_bytes, x)
    for expected in ("1", "2"):
        out = publish.publish(tmp_path, metadata.read(src), onnx_bytes, x, ref)
        assert out.name == expected and metadata.read(out).version == expected
    assert sorted(p.name for p in (tmp_path / "compression_selector").iterdir()) == ["1", "2"]
    with pytest.raises(ValueError, match="at least 256"):
        publish.publish(tmp_path, metadata.read(src), onnx_bytes, x[:10], ref)
