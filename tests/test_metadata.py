"""metadata.json: what export writes, the server reads, and what it refuses."""

from __future__ import annotations

import json

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
