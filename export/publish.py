"""Publish a model version into a repository: parity-checked, self-describing, and never half-written.

Protocol (docs/repository.md): everything is written into `<repo>/<model>/.staging-<random>/`, which the server
ignores, and then renamed to `<repo>/<model>/<version>/` in one rename on the same file system. A version
directory that exists is therefore complete. Versions are integers; a new one is one more than the highest.
Version directories (and the directories publish creates) are 0755 and their files 0644, whatever the umask, so
a server running as another user (systemd's DynamicUser, a pod's uid 10001) can read them.

Every version is published with its features inside model.onnx (export/feature_graph.py): the trained model is
checked against its framework on the held-out feature matrix, then the composed graph against features.py and
the framework (or, when the caller gives no framework, the trained ONNX model just checked against it) on
generated raw columns and the ends of every raw field's range. A version that fails either is not published.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dwcp_inference import features as feats
from dwcp_inference import metadata as md
from dwcp_inference.metadata import ModelMetadata, TensorSpec
from dwcp_inference.raw_inputs import edge_columns, graph_feed_plan

from . import feature_graph
from .onnx_export import output_specs

MIN_PARITY_INPUTS = 256
TEST_VECTORS = 4


class ParityError(AssertionError):
    """onnxruntime and the framework disagree beyond the tolerance."""


def run_onnx(onnx_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """The model on a feature matrix (for a model with the feature graph, its trained part)."""
    import onnxruntime as ort

    onnx_bytes = feature_graph.trained_part(onnx_bytes)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x})))


def check_parity(onnx_out: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], tolerance: float,
                 exact: Sequence[str] = ()) -> dict[str, Any]:
    """Compare onnxruntime outputs with the framework's on the same inputs. `exact` outputs (labels,
    decisions) must be identical; the rest within `tolerance` x (1 + |framework output|), an absolute tolerance
    for small outputs and a relative one for large. Returns the figures."""
    report: dict[str, Any] = {}
    for name, ref in reference.items():
        got = np.asarray(onnx_out[name]).reshape(np.shape(ref))
        if name in exact:
            mismatches = int(np.sum(got != ref))
            report[name] = {"mismatches": mismatches}
            if mismatches:
                raise ParityError(f"{name}: {mismatches} of {len(ref)} decisions differ")
        else:
            diff = np.abs(got.astype(np.float64) - ref)
            err = float(np.max(diff)) if np.size(ref) else 0.0
            worst = float(np.max(diff / (1.0 + np.abs(ref)))) if np.size(ref) else 0.0
            report[name] = {"max_abs_error": err, "max_scaled_error": worst}
            if not worst <= tolerance:
                raise ParityError(f"{name}: error {worst:.3g} > tolerance {tolerance:.3g} "
                                  f"(|onnx - framework| / (1 + |framework|); max abs error {err:.3g})")
    return report


Framework = Callable[[np.ndarray], Mapping[str, np.ndarray]]  # feature matrix -> the framework's outputs


def publish(repo: Path, meta: ModelMetadata, onnx_bytes: bytes, parity_inputs: np.ndarray,
            reference: Mapping[str, np.ndarray], exact: Sequence[str] = (), framework: Framework | None = None,
            with_features: bool = True) -> Path:
    """Check parity on held-out inputs (the feature matrix), put the feature graph in front of the model (unless
    `with_features` is False) and check it, complete the metadata (tensor specs, sha256, test vectors, version)
    and publish. Returns the version directory. `onnx_bytes` may be a published version's model.onnx with its
    feature graph (`meta` says so): its trained part is taken out and composed again."""
    onnx_bytes = feature_graph.trained_part(onnx_bytes)  # the same, unless it already holds the features
    meta.features_in_graph, meta.feature_output = False, ""
    if len(parity_inputs) < MIN_PARITY_INPUTS:
        raise ValueError(f"parity needs at least {MIN_PARITY_INPUTS} held-out inputs, got {len(parity_inputs)}")
    onnx_out = run_onnx(onnx_bytes, parity_inputs)
    parity = check_parity(onnx_out, reference, meta.tolerance, exact)
    inputs, outputs = output_specs(onnx_bytes)
    meta.inputs = [TensorSpec.from_dict(t) for t in inputs]
    meta.outputs = [TensorSpec.from_dict(t) for t in outputs]
    meta.metrics["parity"] = {"inputs": int(len(parity_inputs)), "tolerance": meta.tolerance, **parity}
    meta.test_vectors = [{"input": parity_inputs[i].tolist(),
                          "outputs": {k: np.asarray(v[i]).tolist() for k, v in onnx_out.items()}}
                         for i in range(TEST_VECTORS)]
    if with_features:
        onnx_bytes = _with_feature_graph(meta, onnx_bytes, framework, exact)

    model_dir = Path(repo) / meta.name
    _make_readable_dirs(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        (staging / md.MODEL_FILE).write_bytes(onnx_bytes)
        meta.sha256 = md.sha256_file(staging / md.MODEL_FILE)
        while True:
            meta.version = str(next_version(model_dir))
            md.write(staging, meta)
            for f in staging.iterdir():
                os.chmod(f, 0o644)  # explicit, whatever the umask: a server running as another user reads it
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700
            try:
                os.rename(staging, model_dir / meta.version)
                break
            except OSError:  # another publisher took this number first
                if not (model_dir / meta.version).exists():
                    raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model_dir / meta.version


def _with_feature_graph(meta: ModelMetadata, trained: bytes, framework: Framework | None,
                        exact: Sequence[str]) -> bytes:
    """The composed model, parity-checked on generated raw columns and the edges of the raw fields' ranges; sets
    the metadata's inputs, feature output and raw test vectors. Raises ParityError."""
    try:
        composed = feature_graph.compose(meta, trained).SerializeToString()
    except feature_graph.FeatureGraphError as e:
        raise ParityError(f"feature graph: {e}") from None
    raw = feature_graph.sample_raw(meta, MIN_PARITY_INPUTS, np.random.default_rng(0))
    edges = edge_columns(meta.raw_fields, meta.window)
    if edges is not None:
        raw = feature_graph.concat_columns(raw, {k: edges[k] for k in raw})
    pipeline = feats.Pipeline(meta.raw_fields, meta.features)
    pipeline.validate(raw)  # what the server would accept
    x = feats.transform(meta.features, raw)  # the reference implementation
    reference = dict(framework(x) if framework else run_onnx(trained, x))
    feature_output = meta.inputs[0].name  # the trained model's input: the composed graph answers it
    specs, _ = output_specs(composed)
    meta.inputs = [TensorSpec.from_dict(t) for t in specs]
    meta.features_in_graph, meta.feature_output = True, feature_output
    import onnxruntime as ort

    sess = ort.InferenceSession(composed, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(names, {n: prep(raw[n]) for n, prep in graph_feed_plan(meta)})))
    report = check_parity({"features": got[feature_output]}, {"features": x.astype(np.float64)}, meta.tolerance)
    report.update(check_parity(got, {k: v for k, v in reference.items() if k in got}, meta.tolerance, exact))
    meta.metrics["parity"]["feature_graph"] = {
        "raw_inputs": len(x), "reference": "features.py + " + ("the framework" if framework else
                                                            "the trained ONNX model"), **report}
    meta.test_vectors = [{"raw": {k: np.asarray(v[i]).tolist() for k, v in raw.items()},
                          "input": x[i].tolist(),
                          "outputs": {k: np.asarray(got[k][i]).tolist() for k in names if k != feature_output}}
                         for i in range(TEST_VECTORS)]
    return composed


def _make_readable_dirs(path: Path) -> None:
    """mkdir -p, with each directory it creates 0755 whatever the umask."""
    if path.is_dir():
        return
    _make_readable_dirs(path.parent)
    path.mkdir(exist_ok=True)
    os.chmod(path, 0o755)


def next_version(model_dir: Path) -> int:
    numbers = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=0) + 1
