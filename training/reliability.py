"""Node reliability detector: an IsolationForest (unsupervised, fitted on normal rows) and a gradient-boosted
classifier (supervised), the served one chosen on validation data. The threshold is the highest score that
flags at most half the target false-positive rate of validation normals (a margin for drift), which gives the
most recall that budget allows; both are judged on test data against a static threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dwcp_inference.contracts import RELIABILITY
from dwcp_inference.features import transform
from dwcp_inference.metadata import ModelMetadata, normal_medians

from .common import gate, provenance, time_split
from .data.generators import RELIABILITY_FEATURES
from .evaluation import detection, table, threshold_for_fpr

NAME = RELIABILITY.name
TARGET_RECALL = 0.98
TARGET_FPR = 0.05
RAW_FIELDS = RELIABILITY.raw_fields()  # the contract's (dwcp_inference/contracts/)
FEATURES = list(RELIABILITY.features)  # trees need no scaling


def _scores(name: str, est: Any, x: np.ndarray) -> np.ndarray:
    """Higher is more anomalous, for either model."""
    return -est.decision_function(x) if name == "isolation_forest" else est.predict_proba(x)[:, 1]


def train(columns: dict[str, np.ndarray], out: Path | None, *, source: str, seed: int = 0, trees: int = 100,
          max_depth: int = 3, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    import sklearn
    from sklearn.ensemble import GradientBoostingClassifier, IsolationForest

    from dwcp_inference.export import onnx_export, publish

    x = transform(FEATURES, columns)
    y = np.asarray(columns["is_anomaly"]).astype(int)
    tr, va, te = time_split(len(y))
    normal = x[tr][y[tr] == 0]
    candidates = {
        "isolation_forest": IsolationForest(n_estimators=trees, random_state=seed).fit(normal),
        "gradient_boosting": GradientBoostingClassifier(n_estimators=trees, max_depth=max_depth, random_state=seed)
        .fit(x[tr], y[tr]),
    }
    chosen, best_val = "", None
    val_rows: dict[str, dict[str, float]] = {}
    thresholds = {}
    for name, est in candidates.items():
        s = _scores(name, est, x[va])
        thresholds[name] = threshold_for_fpr(s, y[va], TARGET_FPR / 2)
        val_rows[name] = detection(y[va], s >= thresholds[name])
        key = (-val_rows[name]["recall"], -val_rows[name]["f1"])
        if best_val is None or key < best_val:
            chosen, best_val = name, key
    est, threshold = candidates[chosen], thresholds[chosen]

    # Baseline: a static rule on normal training statistics: any metric beyond 3 standard deviations.
    mean, std = normal.mean(axis=0), normal.std(axis=0) + 1e-9
    rows = {}
    for name, e in candidates.items():
        rows[f"{name}{' (served)' if name == chosen else ''}"] = detection(
            y[te], _scores(name, e, x[te]) >= thresholds[name])
    rows["static threshold (any |z| > 3)"] = detection(y[te], (np.abs((x[te] - mean) / std) > 3).any(axis=1))
    report = table(f"{NAME}: held-out (last 15% in time, {te.stop - te.start} rows)", rows,
                   ["recall", "fpr", "precision", "f1"])
    if not quiet:
        print(f"[{NAME}] chose {chosen} on validation: {val_rows[chosen]}", flush=True)
        print(report, flush=True)
    if out is None:  # tuning: judged on validation data only
        return {"model": NAME, "objective": -val_rows[chosen]["f1"], "test": rows, "report": report}

    # Severity: CRITICAL above the score that 80% of validation critical incidents reach.
    sev = np.asarray(columns.get("severity", y * 2))[va]
    s_val = _scores(chosen, est, x[va])
    critical = float(np.percentile(s_val[sev == 3], 20)) if np.any(sev == 3) else float(np.max(s_val))
    served = rows[next(k for k in rows if k.endswith("(served)"))]
    meta = ModelMetadata(
        name=NAME, version="", framework={"name": "scikit-learn", "version": sklearn.__version__},
        opset=onnx_export.OPSET, inputs=[], outputs=[], raw_fields=RAW_FIELDS, features=FEATURES, window=0,
        targets=[],
        decision={"algorithm": chosen,
                  "score_output": "scores" if chosen == "isolation_forest" else "probabilities",
                  "score_column": 0 if chosen == "isolation_forest" else 1,
                  "score_sign": -1.0 if chosen == "isolation_forest" else 1.0,
                  "threshold": threshold, "critical_threshold": max(critical, threshold),
                  "normal": {f: [float(m), float(s)] for f, m, s in zip(RELIABILITY_FEATURES, mean, std)}},
        metrics={"test": rows, "validation": val_rows,
                 "targets": {"recall": TARGET_RECALL, "fpr": TARGET_FPR,
                             "met": served["recall"] >= TARGET_RECALL and served["fpr"] <= TARGET_FPR},
                 "report": report},
        training=provenance(columns, source, seed, len(y)), tolerance=1e-4,
        imputation=normal_medians(columns, [f.name for f in RAW_FIELDS if not f.vocabulary and f.name in columns],
                                  np.flatnonzero(y[tr] == 0)))
    meta.training["torch"] = None
    held_out = x[te][:512]
    onnx_bytes = onnx_export.from_sklearn(est, x.shape[1])
    if chosen == "isolation_forest":
        reference = {"label": est.predict(held_out), "scores": est.decision_function(held_out)}
    else:
        reference = {"label": est.predict(held_out), "probabilities": est.predict_proba(held_out)}
    static = rows["static threshold (any |z| > 3)"]
    failures = [f for f, bad in (
        (f"recall {served['recall']:.3f} < {TARGET_RECALL}", served["recall"] < TARGET_RECALL),
        (f"false-positive rate {served['fpr']:.3f} > {TARGET_FPR}", served["fpr"] > TARGET_FPR),
        (f"F1 {served['f1']:.3f} does not beat the static threshold's {static['f1']:.3f}",
         served["f1"] <= static["f1"])) if bad]
    result = {"model": NAME, "test": rows, "report": report,
              "curves": {"scores": _scores(chosen, est, x[te]).tolist(), "labels": y[te].tolist(),
                         "threshold": threshold}}
    meta.metrics["gate"] = gate(NAME, failures, force, result)
    version_dir = publish.publish(out, meta, onnx_bytes, held_out, reference, exact=["label"])
    return {**result, "version": meta.version, "path": str(version_dir)}
