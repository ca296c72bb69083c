"""`dwcp-inference import`: a model trained elsewhere (Keras, scikit-learn, PyTorch or ONNX) as a new version of one
of our models, served through the same RPCs.

The file is converted to ONNX (tf2onnx, skl2onnx, the torch exporter, or taken as it is), checked against the
contract of its model kind (the input a caller's samples become, the outputs the decision rule reads), compared
with its own framework on generated inputs, and published through the same staging-and-rename as the training
jobs: a refused import leaves nothing in the repository. The features are ours (identity with the scaler's
scaling), so the published model.onnx holds them (export/feature_graph.py), checked against the framework too.

What the model is fed comes from two small files the DWCP scripts already wrote: a features file naming the
input columns in order (raw fields of NetworkSample, NodeMetrics or ConsensusSample), and a scaler as JSON (per
feature a mean and scale, or a min and max), which becomes the metadata's feature scaling.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dwcp_inference.contracts import BANDWIDTH, CONTRACTS
from dwcp_inference.features import Feature, RawField, Target
from dwcp_inference.metadata import MetadataError, ModelMetadata, check_imputation, normal_medians

KINDS = {"bandwidth": "bandwidth_predictor", "reliability": "reliability_detector",
         "consensus": "consensus_latency"}
SOURCES = ("keras", "sklearn", "torch", "onnx")
BANDWIDTH_TARGETS = tuple(t.name for t in BANDWIDTH.targets)
PARITY_INPUTS = 256
OPSET = 17


class ImportRefused(ValueError):
    """The file does not fit: the message says what was expected and what was found."""


# ------------------------------------------------------------------ the small files beside the model

def read_scaler(path: Path) -> dict[str, tuple[float, float]]:
    """Per feature name, (offset, divisor): value -> (value - offset) / divisor. Reads the shapes the DWCP scripts
    wrote: {"feature_names": [...], "mean": [...], "scale": [...]} (or "min"/"max", sklearn's "mean_",
    "scale_", "data_min_", "data_max_"), or {name: {"mean": m, "scale": s}} / {name: {"min": a, "max": b}},
    optionally under "features"."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ImportRefused(f"--scaler {path}: not readable JSON ({e})") from None
    if isinstance(d, dict) and isinstance(d.get("features"), dict):
        d = d["features"]

    def pick(obj: dict, *keys: str) -> Any:
        return next((obj[k] for k in keys if k in obj), None)

    out: dict[str, tuple[float, float]] = {}
    names = pick(d, "feature_names", "feature_names_in_", "columns", "names") if isinstance(d, dict) else None
    if names is not None:
        mean, scale = pick(d, "mean", "mean_"), pick(d, "scale", "scale_", "std")
        lo, hi = pick(d, "min", "data_min", "data_min_"), pick(d, "max", "data_max", "data_max_")
        for i, name in enumerate(names):
            try:
                out[str(name)] = _pair(mean[i], scale[i], "mean/scale") if mean is not None and scale is not None \
                    else _pair(lo[i], float(hi[i]) - float(lo[i]), "min/max")
            except (TypeError, IndexError):
                raise ImportRefused(f"--scaler {path}: expected lists of the same length as feature_names: mean and "
                                    f"scale, or min and max; found keys {sorted(d)}") from None
    elif isinstance(d, dict) and d and all(isinstance(v, dict) for v in d.values()):
        for name, v in d.items():
            if "mean" in v and ("scale" in v or "std" in v):
                out[name] = _pair(v["mean"], v.get("scale", v.get("std")), f"{name}: mean/scale")
            elif "min" in v and "max" in v:
                out[name] = _pair(v["min"], float(v["max"]) - float(v["min"]), f"{name}: min/max")
            else:
                raise ImportRefused(f"--scaler {path}: {name}: expected mean and scale, or min and max; found "
                                    f"{sorted(v)}")
    else:
        raise ImportRefused(f"--scaler {path}: expected feature_names with mean and scale (or min and max), or an "
                            "object of {name: {mean, scale} or {min, max}}")
    return out


def _pair(offset: Any, divisor: Any, what: str) -> tuple[float, float]:
    o, s = float(offset), float(divisor)
    if not (math.isfinite(o) and math.isfinite(s) and s > 0):
        raise ImportRefused(f"scaler {what}: expected finite numbers and a positive scale (max > min), got "
                            f"{offset} and {divisor}")
    return o, s


def read_features(path: Path) -> tuple[list[str], list[str] | None]:
    """(input columns in order, output names or None): a JSON list, {"inputs": [...], "outputs": [...]}, or
    one name per line."""
    text = Path(path).read_text()
    try:
        d = json.loads(text)
    except ValueError:
        names = [line.split("#")[0].strip() for line in text.splitlines()]
        return [n for n in names if n], None
    if isinstance(d, list):
        return [str(n) for n in d], None
    if isinstance(d, dict) and isinstance(d.get("inputs"), list):
        outputs = d.get("outputs")
        return [str(n) for n in d["inputs"]], [str(n) for n in outputs] if outputs else None
    raise ImportRefused(f"--features {path}: expected a list of input names, {{\"inputs\": [...], "
                        "\"outputs\": [...]}, or one name per line")


NO_IMPUTATION = ("none: imported without --imputation-from (the data it was trained on), so no value is known "
                 "for a field a caller cannot measure; the Go drop-ins send 0 and say 'not imputed: no metadata'")


def read_imputation(path: Path, kind: str, raw_fields: list[RawField],
                    load_csv: Callable[[Path, str], dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """The imputation section as training writes it, from the data the model was trained on (a CSV in the
    training schema of docs/data.md, read and checked by `load_csv(path, model)` as `train --data` reads it: the
    command passes training's loader, which export may not import): each numeric raw field's median over the
    file's normal rows (is_anomaly 0; every row where the schema has no label)."""
    try:
        columns = load_csv(path, KINDS[kind])
    except (ValueError, OSError) as e:  # training's DataError is a ValueError
        raise ImportRefused(f"--imputation-from {path}: {e}") from None
    normal = np.flatnonzero(columns["is_anomaly"] == 0) if "is_anomaly" in columns else \
        np.arange(len(next(iter(columns.values()))))
    if normal.size == 0:
        raise ImportRefused(f"--imputation-from {path}: no normal rows (is_anomaly 0) to take medians over")
    fields = [f.name for f in raw_fields if not f.vocabulary and f.name in columns]
    how = f"median of the normal rows of {Path(path).name}, given to import as its training data"
    section = {name: {**entry, "how": how} for name, entry in normal_medians(columns, fields, normal).items()}
    try:
        check_imputation(section, raw_fields)  # inside each field's range, as a version's loader requires
    except MetadataError as e:
        raise ImportRefused(f"--imputation-from {path}: {e}") from None
    return section


def catalog(kind: str) -> dict[str, RawField]:
    """The raw fields callers send for this kind, with the ranges we accept (the model's contract)."""
    return {f.name: f for f in CONTRACTS[KINDS[kind]].raw_fields() if not f.vocabulary}


# ------------------------------------------------------------------ loading and converting each framework

@dataclass
class Source:
    framework: dict[str, str]
    onnx_bytes: bytes
    predict: Callable[[np.ndarray], dict[str, np.ndarray]]  # the framework's answers, by ONNX output name
    exact: tuple[str, ...] = ()  # outputs that are decisions: must be identical


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def _refuse_pickle(path: Path, what: str) -> None:
    raise ImportRefused(f"{path}: {what} is a pickle, and loading a pickle runs code from the file. Pass "
                        "--trust-pickle if you trust whoever wrote it")


def load_keras(path: Path, input_shape: tuple[int, ...]) -> Source:
    import keras
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec([None, *input_shape], tf.float32, name="input")]
    if path.is_dir():  # a SavedModel
        loaded = tf.saved_model.load(str(path))
        serve = loaded.signatures.get("serving_default")
        if serve is None:
            raise ImportRefused(f"{path}: a SavedModel without a serving_default signature")
        arg = next(iter(serve.structured_input_signature[1]))

        @tf.function(input_signature=spec)
        def fn(x):
            return {"output": next(iter(serve(**{arg: x}).values()))}
    else:
        if path.suffix not in (".keras", ".h5"):
            raise ImportRefused(f"{path}: expected a .keras (or .h5) file or a SavedModel directory")
        model = keras.models.load_model(str(path), compile=False)  # safe_mode: no code from the file
        declared = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else ()
        if declared and (len(declared) != len(input_shape)
                         or any(d is not None and d != e for d, e in zip(declared, input_shape))):
            raise ImportRefused(f"{path}: the model takes input {[None, *declared]}; the features file and window "
                                f"make {[None, *input_shape]}")

        @tf.function(input_signature=spec)
        def fn(x):
            return {"output": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET)

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"output": fn(tf.constant(x))["output"].numpy()}

    return Source({"name": "keras", "version": keras.__version__, "tensorflow": tf.__version__,
                   "converter": f"tf2onnx {tf2onnx.__version__}"}, proto.SerializeToString(), predict)


def load_sklearn(path: Path, n_features: int, trust_pickle: bool) -> Source:
    import sklearn

    from .onnx_export import from_sklearn

    if not trust_pickle:
        _refuse_pickle(path, "a scikit-learn model file")
    import joblib

    est = joblib.load(path)
    if not hasattr(est, "predict"):
        raise ImportRefused(f"{path}: expected a scikit-learn estimator or pipeline, found {type(est).__name__}")
    declared = getattr(est, "n_features_in_", None)
    if declared is not None and declared != n_features:
        raise ImportRefused(f"{path}: the estimator takes {declared} features; the features file names {n_features}")
    try:
        onnx_bytes = from_sklearn(est, n_features)
    except Exception as e:  # skl2onnx names what it cannot convert
        raise ImportRefused(f"{path}: skl2onnx cannot convert {type(est).__name__}: {e}") from None

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        out = {"label": est.predict(x)}
        if hasattr(est, "decision_function") and not hasattr(est, "predict_proba"):
            out["scores"] = est.decision_function(x)
        if hasattr(est, "predict_proba"):
            out["probabilities"] = est.predict_proba(x)
        return out

    return Source({"name": "scikit-learn", "version": sklearn.__version__}, onnx_bytes, predict, exact=("label",))


def load_torch(path: Path, input_shape: tuple[int, ...], trust_pickle: bool) -> Source:
    import torch

    from .onnx_export import from_torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")  # TorchScript: no code from a pickle
        kind = "TorchScript"
    except RuntimeError:
        if not trust_pickle:
            _refuse_pickle(path, "not a TorchScript file (torch.jit.save); a pickled module")
        module = torch.load(str(path), map_location="cpu", weights_only=False)
        kind = "pickled module"
    if not isinstance(module, torch.nn.Module):
        raise ImportRefused(f"{path}: expected a torch module (TorchScript, or a pickled nn.Module), found "
                            f"{type(module).__name__} (a state_dict needs its module's code: save it with "
                            "torch.jit.script(model).save(...))")
    module.eval()
    example = torch.zeros(2, *input_shape)
    try:
        with torch.no_grad():
            out = module(example)
    except Exception as e:
        raise ImportRefused(f"{path}: the module does not take input {[None, *input_shape]} (from the features "
                            f"file and window): {str(e).splitlines()[0]}") from None
    if not isinstance(out, torch.Tensor):
        raise ImportRefused(f"{path}: expected the module to return one tensor, found {type(out).__name__}")
    onnx_bytes = from_torch(module, example, "input", ["output"])

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {"output": module(torch.from_numpy(x)).numpy()}

    return Source({"name": "torch", "version": torch.__version__, "format": kind}, onnx_bytes, predict)


def load_onnx(path: Path) -> Source:
    import onnx

    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ImportRefused(f"{path}: not a valid ONNX model: {str(e).splitlines()[0]}") from None
    if len(model.graph.input) != 1:
        raise ImportRefused(f"{path}: expected one input tensor, found {[i.name for i in model.graph.input]}")

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        from onnx.reference import ReferenceEvaluator  # onnx's own implementation: not onnxruntime

        names = [o.name for o in model.graph.output]
        return dict(zip(names, ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})))

    return Source({"name": "onnx", "version": onnx.__version__, "opset": str(model.opset_import[0].version)},
                  model.SerializeToString(), predict)


# ------------------------------------------------------------------ the import

def import_model(kind: str, source: str, path: Path, repository: Path, *, features_file: Path,
                 scaler_file: Path | None = None, no_scaler: bool = False, window: int | None = None,
                 threshold: float | None = None, trust_pickle: bool = False, tolerance: float = 1e-4,
                 seed: int = 0, imputation_file: Path | None = None,
                 load_csv: Callable[[Path, str], dict[str, np.ndarray]] | None = None) -> Path:
    """Convert, check and publish; returns the new version's directory. Raises ImportRefused."""
    from . import publish
    from .onnx_export import output_specs

    if kind not in KINDS:
        raise ImportRefused(f"MODEL: expected one of {list(KINDS)}, got {kind!r} (the compression selector's "
                            "choices are tied to our codec oracle and are not imported)")
    if source not in SOURCES:
        raise ImportRefused(f"--from: expected one of {list(SOURCES)}, got {source!r}")
    path = Path(path)
    if not path.exists():
        raise ImportRefused(f"{path}: no such file or directory")
    inputs, outputs = read_features(features_file)
    ranges = catalog(kind)
    unknown = [n for n in inputs if n not in ranges and not n.startswith("custom.")]
    if unknown or not inputs:
        raise ImportRefused(f"--features: {unknown or 'no names'}: expected fields of the {KINDS[kind]}'s samples: "
                            f"{list(ranges)} (or custom.<name>)")
    scaling = read_scaler(scaler_file) if scaler_file else {}
    neural = source in ("keras", "torch", "onnx")
    if neural and not scaler_file and not no_scaler and kind != "reliability":
        raise ImportRefused(f"--scaler: a {source} {kind} model is fed scaled features: give the scaler it was "
                            "trained with (JSON), or --no-scaler if it takes the raw values")
    missing = [n for n in inputs if scaling and n not in scaling]
    if missing:
        raise ImportRefused(f"--scaler: no scaling for {missing}; it has {sorted(scaling)}")
    sequence = kind in ("bandwidth", "consensus")
    if sequence and source == "sklearn":
        raise ImportRefused(f"a {kind} model takes a window of samples; scikit-learn estimators take rows")
    if sequence and not window:
        raise ImportRefused("--window: a sequence model needs the number of samples in its window")
    input_shape = (window, len(inputs)) if sequence else (len(inputs),)
    raw_fields = [ranges.get(n, RawField(n)) for n in inputs]
    if imputation_file and load_csv is None:
        raise ImportRefused("--imputation-from: this caller gave no CSV loader (the command line passes training's)")
    imputation = read_imputation(imputation_file, kind, raw_fields, load_csv) if imputation_file else {}

    if source == "keras":
        src = load_keras(path, input_shape)
    elif source == "sklearn":
        src = load_sklearn(path, len(inputs), trust_pickle)
    elif source == "torch":
        src = load_torch(path, input_shape, trust_pickle)
    else:
        src = load_onnx(path)
    in_specs, out_specs = output_specs(src.onnx_bytes)
    declared = tuple(in_specs[0]["shape"][1:])
    if len(declared) != len(input_shape) or any(d is not None and d != e for d, e in zip(declared, input_shape)):
        raise ImportRefused(f"{path}: the model takes input {[None, *declared]}; the features file "
                            f"({len(inputs)} columns){' and --window' if sequence else ''} make "
                            f"{[None, *input_shape]}")

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(PARITY_INPUTS, *input_shape)).astype(np.float32)
    try:
        reference = src.predict(x)
    except Exception as e:
        raise ImportRefused(f"{path}: the {src.framework['name']} model fails on input "
                            f"{[PARITY_INPUTS, *input_shape]}: {str(e).splitlines()[0]}") from None
    onnx_out = publish.run_onnx(src.onnx_bytes, x)
    features = [Feature(n, n, "identity", mean=scaling.get(n, (0.0, 1.0))[0], std=scaling.get(n, (0.0, 1.0))[1])
                for n in inputs]
    decision, targets = _contract(kind, src, onnx_out, input_shape, outputs, scaling, threshold, features)
    meta = ModelMetadata(
        name=KINDS[kind], version="", framework=src.framework, opset=OPSET, inputs=[], outputs=[],
        raw_fields=raw_fields, features=features, imputation=imputation,
        window=window if sequence else 0, targets=targets, decision=decision,
        metrics={"imported": True, "note": "trained elsewhere: no held-out metrics; parity on generated inputs"},
        training={"imported_from": source, "source_file": path.name, "source_sha256": _sha256(path),
                  "features_file": Path(features_file).name, "features_sha256": _sha256(Path(features_file)),
                  "scaler_file": Path(scaler_file).name if scaler_file else None,
                  "scaler_sha256": _sha256(Path(scaler_file)) if scaler_file else None,
                  "imputation_file": Path(imputation_file).name if imputation_file else None,
                  "imputation_sha256": _sha256(Path(imputation_file)) if imputation_file else None,
                  **({} if imputation_file else {"imputation": NO_IMPUTATION}),
                  "command": " ".join(["dwcp-inference", *sys.argv[1:]]),
                  "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        tolerance=tolerance)
    reference = {k: v for k, v in reference.items() if k in onnx_out}
    try:
        return publish.publish(repository, meta, src.onnx_bytes, x, reference, exact=src.exact,
                               framework=lambda features: {k: v for k, v in src.predict(features).items()
                                                           if k in onnx_out})
    except publish.ParityError as e:
        raise ImportRefused(f"{path}: onnxruntime and {src.framework['name']} disagree on generated inputs: {e}") \
            from None


def _contract(kind: str, src: Source, out: dict[str, np.ndarray], input_shape: tuple[int, ...],
              outputs: list[str] | None, scaling: dict[str, tuple[float, float]], threshold: float | None,
              features: list[Feature]) -> tuple[dict[str, Any], list[Target]]:
    """The decision rule for the kind, after checking the model's outputs fit it."""
    n = PARITY_INPUTS
    if kind == "bandwidth":
        if len(out) != 1:
            raise ImportRefused(f"a bandwidth model returns one tensor of predictions; found {list(out)}")
        y = next(iter(out.values()))
        names = outputs or list(BANDWIDTH_TARGETS)
        bad = [t for t in names if t not in BANDWIDTH_TARGETS]
        if bad:
            raise ImportRefused(f"outputs {bad}: expected names among {list(BANDWIDTH_TARGETS)}")
        if y.shape != (n, len(names)):
            raise ImportRefused(f"a bandwidth model returns [N, {len(names)}] ({', '.join(names)}); found "
                                f"{[None, *y.shape[1:]]} (name its outputs in the features file if fewer)")
        ranges = {"packet_loss": (0.0, 1.0)}
        targets = [Target(t, "identity", *scaling.get(t, (0.0, 1.0)), *ranges.get(t, (0.0, None))) for t in names]
        return {"interval_seconds": 300.0, "validation_mape_pct": 0.0,
                "confidence": "1 / (1 + coefficient of variation of the window's bandwidth) (imported: no "
                              "validation error)"}, targets
    if kind == "reliability":
        normal = {f.name: [f.mean, f.std] for f in features}
        if "scores" in out and "label" in out:  # an IsolationForest (or its pipeline) through skl2onnx
            return {"algorithm": "imported isolation forest", "score_output": "scores", "score_column": 0,
                    "score_sign": -1.0, "threshold": 0.0 if threshold is None else threshold,
                    "critical_threshold": max(0.1, 0.0 if threshold is None else threshold), "normal": normal,
                    "rule": "anomalous when -decision_function >= threshold (0: the forest's own boundary)"}, []
        if "probabilities" in out:
            return {"algorithm": "imported classifier", "score_output": "probabilities", "score_column": 1,
                    "score_sign": 1.0, "threshold": 0.5 if threshold is None else threshold,
                    "critical_threshold": 0.9, "normal": normal}, []
        y = next(iter(out.values()))
        if len(out) != 1 or y.shape not in ((n,), (n, 1)):
            raise ImportRefused(f"a detector returns one score per row ([N] or [N, 1], higher is more "
                                f"anomalous); found {[(k, [None, *v.shape[1:]]) for k, v in out.items()]}")
        if threshold is None:
            raise ImportRefused("--threshold: a detector's score needs the threshold it was chosen with")
        return {"algorithm": f"imported {src.framework['name']} detector", "score_output": next(iter(out)),
                "score_column": 0, "score_sign": 1.0, "threshold": threshold,
                "critical_threshold": threshold, "normal": normal}, []
    # consensus: an autoencoder returns its reconstruction of the window
    y = next(iter(out.values()))
    if len(out) != 1 or y.shape != (n, *input_shape):
        raise ImportRefused(f"a consensus-latency autoencoder returns its reconstruction, "
                            f"{[None, *input_shape]}; found {[(k, [None, *v.shape[1:]]) for k, v in out.items()]}")
    if threshold is None:
        raise ImportRefused("--threshold: the reconstruction error above which a window is high-latency")
    return {"threshold": threshold, "reconstruction_output": next(iter(out)),
            "rule": "high latency when the mean squared reconstruction error over the window and features "
                    ">= threshold"}, []


def main(args: Any, load_csv: Callable[[Path, str], dict[str, np.ndarray]] | None = None) -> int:
    try:
        version_dir = import_model(args.model, args.source, args.path, args.repository,
                                   features_file=args.features, scaler_file=args.scaler, no_scaler=args.no_scaler,
                                   window=args.window, threshold=args.threshold, trust_pickle=args.trust_pickle,
                                   imputation_file=args.imputation_from, load_csv=load_csv)
    except ImportRefused as e:
        print(f"import refused: {e}", file=sys.stderr)
        return 2
    meta = json.loads((version_dir / "metadata.json").read_text())
    parity = {k: v for k, v in meta["metrics"]["parity"].items() if isinstance(v, dict)}
    print(f"imported {args.source} {args.path} as {meta['name']} version {meta['version']} ({version_dir}); "
          f"parity on {meta['metrics']['parity']['inputs']} generated inputs: {parity}")
    return 0
