"""The metadata.json that sits beside every model.onnx: written by export, read by the server.

It carries everything needed to serve a version without the training code: tensor specs, the raw fields and
their accepted ranges, the ordered feature spec with its scaling, output targets, the decision rule and its
thresholds, held-out metrics, provenance, the sha256 of model.onnx and test vectors to verify it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import MODEL_KINDS
from .features import Feature, RawField, Target

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"
MODEL_FILE = "model.onnx"


class MetadataError(ValueError):
    """metadata.json is missing, unreadable or does not follow the schema."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | None, ...]  # None is a dynamic axis (the batch)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass
class ModelMetadata:
    name: str
    version: str
    framework: dict[str, str]            # {"name": "torch", "version": "2.5.1"}
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    raw_fields: list[RawField]
    features: list[Feature]
    window: int                          # samples per item for sequence models, 0 otherwise
    targets: list[Target]                # regression outputs in domain units (bandwidth only)
    decision: dict[str, Any]             # the kind's decision rule: thresholds, choices, severity bands...
    metrics: dict[str, Any]              # held-out metrics, the baselines beside them, the targets met
    training: dict[str, Any]             # provenance: data fingerprint, command, seed, rows, created_at
    sha256: str = ""
    test_vectors: list[dict[str, Any]] = field(default_factory=list)
    tolerance: float = 1e-4              # absolute, for test vectors and parity
    schema_version: int = SCHEMA_VERSION
    # True: model.onnx computes the features itself (export/feature_graph.py). Its `inputs` are then the raw
    # columns (float64 [N] or [N, W]; categorical fields as int64 indices into their vocabulary), it answers the
    # features too as output `feature_output`, and each test vector carries its raw columns under "raw".
    # False (the default, and every version exported before): `inputs` is the one feature matrix.
    features_in_graph: bool = False
    feature_output: str = ""
    # What a caller that cannot measure a raw field sends in its place, and how the value was derived:
    # {field: {"value": float, "how": "median of the training data's normal rows"}}. Optional: versions
    # exported before it have none (the Go drop-ins then say "not imputed: no metadata").
    imputation: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [c for f in self.features for c in f.column_names]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "framework": self.framework,
            "opset": self.opset,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "raw_fields": [f.to_dict() for f in self.raw_fields],
            "features": [f.to_dict() for f in self.features],
            "feature_names": self.feature_names,
            "window": self.window,
            "targets": [t.to_dict() for t in self.targets],
            "decision": self.decision,
            "metrics": self.metrics,
            "training": self.training,
            "sha256": self.sha256,
            "tolerance": self.tolerance,
            "test_vectors": self.test_vectors,
            **({"features_in_graph": True, "feature_output": self.feature_output} if self.features_in_graph else {}),
            **({"imputation": self.imputation} if self.imputation else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelMetadata":
        if not isinstance(d, dict):
            raise MetadataError("metadata must be a JSON object")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise MetadataError(f"schema_version {d.get('schema_version')!r} is not supported "
                                f"(this server reads {SCHEMA_VERSION})")
        try:
            meta = cls(
                name=str(d["name"]), version=str(d["version"]), framework=dict(d["framework"]),
                opset=int(d["opset"]),
                inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
                outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
                raw_fields=[RawField.from_dict(f) for f in d["raw_fields"]],
                features=[Feature.from_dict(f) for f in d["features"]],
                window=int(d["window"]),
                targets=[Target.from_dict(t) for t in d.get("targets", [])],
                decision=dict(d["decision"]), metrics=dict(d.get("metrics", {})),
                training=dict(d.get("training", {})), sha256=str(d["sha256"]),
                test_vectors=list(d.get("test_vectors", [])), tolerance=float(d.get("tolerance", 1e-4)),
                features_in_graph=bool(d.get("features_in_graph", False)),
                feature_output=str(d.get("feature_output", "")),
                imputation=dict(d.get("imputation", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MetadataError(f"invalid metadata: {type(e).__name__}: {e}") from e
        if meta.name not in MODEL_KINDS:
            raise MetadataError(f"unknown model name {meta.name!r}, expected one of {list(MODEL_KINDS)}")
        if not meta.inputs or not meta.outputs:
            raise MetadataError("inputs and outputs must not be empty")
        sources = {f.name for f in meta.raw_fields}
        missing = [f.source for f in meta.features if f.source not in sources]
        if missing:
            raise MetadataError(f"features read raw fields that are not declared: {missing}")
        if meta.features_in_graph:
            undeclared = [t.name for t in meta.inputs if t.name not in sources]
            if undeclared or not meta.feature_output:
                raise MetadataError(f"features_in_graph: inputs must be raw fields (not {undeclared}) and "
                                    f"feature_output must name the features output (got {meta.feature_output!r})")
        check_imputation(meta.imputation, meta.raw_fields)
        return meta


def check_imputation(imputation: dict[str, Any], raw_fields: list[RawField]) -> None:
    """Each entry names a declared numeric raw field and holds a finite value inside its range and a
    non-empty `how`; a MetadataError names the first field that does not."""
    declared = {f.name: f for f in raw_fields}
    for name, entry in imputation.items():
        where = f"imputation.{name}"
        f = declared.get(name)
        if f is None:
            raise MetadataError(f"{where}: not a raw field of this model (declared: {sorted(declared)})")
        if f.vocabulary:
            raise MetadataError(f"{where}: a categorical field cannot be imputed with a number")
        if not isinstance(entry, dict) or set(entry) != {"value", "how"}:
            raise MetadataError(f"{where}: expected {{\"value\": number, \"how\": text}}, got {entry!r}")
        value, how = entry["value"], entry["how"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MetadataError(f"{where}.value: expected a finite number, got {value!r}")
        lo = -math.inf if f.min is None else f.min
        hi = math.inf if f.max is None else f.max
        if not lo <= value <= hi:
            raise MetadataError(f"{where}.value: {value!r} is outside the field's range [{f.min}, {f.max}]")
        if not isinstance(how, str) or not how.strip():
            raise MetadataError(f"{where}.how: expected a description of how the value was derived, got {how!r}")


MEDIAN_OF_NORMAL_ROWS = "median of the training data's normal rows"


def normal_medians(columns: dict[str, Any], fields: list[str], normal: Any) -> dict[str, dict[str, Any]]:
    """The imputation section training writes: each field's median over the training data's normal rows
    (`normal` selects them; for windowed columns, every sample of those windows)."""
    out = {}
    for name in fields:
        values = np.asarray(columns[name], dtype=np.float64)[normal]
        out[name] = {"value": float(np.median(values)), "how": MEDIAN_OF_NORMAL_ROWS}
    return out


def read(version_dir: Path) -> ModelMetadata:
    path = Path(version_dir) / METADATA_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise MetadataError(f"{METADATA_FILE} is missing") from e
    except (OSError, json.JSONDecodeError) as e:
        raise MetadataError(f"{METADATA_FILE} is unreadable: {e}") from e
    return ModelMetadata.from_dict(data)


def write(version_dir: Path, meta: ModelMetadata) -> None:
    (Path(version_dir) / METADATA_FILE).write_text(json.dumps(meta.to_dict(), indent=1) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
