"""metadata.json: what export writes, the server reads, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dwcp_inference import metadata
from dwcp_inference.metadata import MetadataError, ModelMetadata


def _version_dir(trained_repo, model="reliability_detector"):
    return trained_repo / model / "1"


def test_published_metadata_round_trips(trained_repo):
    for model in ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency"):
        meta = metadata.read(_version_dir(trained_repo, model))
        assert ModelMetadata.from_dict(json.loads(json.dumps(meta.to_dict()))).to_dict() == meta.to_dict()
        assert meta.sha256 == metadata.sha256_file(_version_dir(trained_repo, model) / "model.onnx")
        assert meta.training["data_fingerprint"] and meta.training["seed"] == 0
        assert len(meta.test_vectors) >= 1 and meta.metrics["parity"]["inputs"] >= 256


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(schema_version=99), "schema_version 99"),
    (lambda d: d.update(name="weather"), "unknown model name"),
    (lambda d: d.pop("features"), "features"),
    (lambda d: d["features"][0].update(transform="cube"), "unknown transform"),
    (lambda d: d["features"][0].update(source="nowhere"), "not declared"),
])
def test_bad_metadata_is_refused_with_the_reason(trained_repo, change, message):
    d = metadata.read(_version_dir(trained_repo)).to_dict()
    change(d)
    with pytest.raises(MetadataError, match=message):
        ModelMetadata.from_dict(d)


# ---------------------------------------------------------------- imputation (issue 20)

BUNDLED = Path(__file__).resolve().parents[1] / "dwcp_inference" / "models"


def _bundled(model="reliability_detector"):
    return json.loads((BUNDLED / model / "1" / metadata.METADATA_FILE).read_text())


def test_bundled_detectors_say_how_unmeasured_fields_are_imputed():
    reliability, consensus = ModelMetadata.from_dict(_bundled()), ModelMetadata.from_dict(_bundled("consensus_latency"))
    for meta, unmeasured in ((reliability, ["timeout_rate", "latency_p99_ms", "sla_violations", "connection_failures",
                                            "disk_io_mbps"]),
                             (consensus, ["quorum_size", "active_nodes", "latency_p95_ms", "latency_p99_ms"])):
        for name in unmeasured:
            assert meta.imputation[name]["how"] == metadata.MEDIAN_OF_NORMAL_ROWS
    # the median of normal training rows, near their mean (decision.normal), not 0
    p99 = reliability.imputation["latency_p99_ms"]["value"]
    assert abs(p99 - reliability.decision["normal"]["latency_p99_ms"][0]) < 5 and p99 > 30


def test_metadata_without_imputation_still_loads():
    d = _bundled()
    del d["imputation"]
    meta = ModelMetadata.from_dict(d)
    assert meta.imputation == {} and "imputation" not in meta.to_dict()


@pytest.mark.parametrize("field,entry,message", [
    ("latency_p99_ms", {"value": float("nan"), "how": "median"}, r"imputation\.latency_p99_ms\.value: expected a finite"),
    ("latency_p99_ms", {"value": -3.0, "how": "median"}, r"imputation\.latency_p99_ms\.value: -3.0 is outside"),
    ("timeout_rate", {"value": 1.5, "how": "median"}, r"imputation\.timeout_rate\.value: 1.5 is outside"),
    ("latency_p99_ms", {"value": "50", "how": "median"}, r"imputation\.latency_p99_ms\.value: expected a finite"),
    ("latency_p99_ms", {"value": 50.0, "how": ""}, r"imputation\.latency_p99_ms\.how"),
    ("latency_p99_ms", {"value": 50.0}, r"imputation\.latency_p99_ms: expected"),
    ("latency_p999_ms", {"value": 50.0, "how": "median"}, r"imputation\.latency_p999_ms: not a raw field"),
])
def test_bad_imputation_is_refused_naming_the_field(field, entry, message):
    d = _bundled()
    d["imputation"][field] = entry
    with pytest.raises(MetadataError, match=message):
        ModelMetadata.from_dict(d)


def test_categorical_field_cannot_be_imputed():
    d = _bundled("consensus_latency")
    d["imputation"]["network_tier"] = {"value": 1.0, "how": "mode"}
    with pytest.raises(MetadataError, match=r"imputation\.network_tier: a categorical field"):
        ModelMetadata.from_dict(d)


def test_server_refuses_a_version_with_a_bad_imputation_and_serves_the_rest(tmp_path):
    import shutil
    import subprocess
    import sys

    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED, repo)
    path = repo / "reliability_detector" / "1" / metadata.METADATA_FILE
    d = json.loads(path.read_text())
    d["imputation"]["disk_io_mbps"]["value"] = -1.0
    path.write_text(json.dumps(d, indent=1))
    out = subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", "verify", "--repository", str(repo)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "imputation.disk_io_mbps.value: -1.0 is outside" in out.stdout + out.stderr
    assert '"consensus_latency"' in out.stdout


def test_training_writes_the_imputation(trained_repo):
    for model in ("reliability_detector", "consensus_latency"):
        meta = metadata.read(_version_dir(trained_repo, model))
        assert meta.imputation["latency_p99_ms"]["how"] == metadata.MEDIAN_OF_NORMAL_ROWS
        assert meta.imputation["latency_p99_ms"]["value"] > 0
