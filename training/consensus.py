"""Consensus-latency detector: an LSTM autoencoder learns normal windows of consensus metrics; a window it
reconstructs badly is a high-latency episode. The threshold maximises validation accuracy; the test set is
judged against a static threshold on p99 latency chosen the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dwcp_inference.contracts import CONSENSUS
from dwcp_inference.features import fit_scaling, transform
from dwcp_inference.metadata import ModelMetadata, normal_medians

from .common import gate, provenance, seed_everything, take, time_split
from .data.generators import CONSENSUS_ANOMALIES
from .evaluation import best_accuracy_threshold, detection, table

NAME = CONSENSUS.name
WINDOW = CONSENSUS.window
TARGET_ACCURACY = 0.98
RAW_FIELDS = CONSENSUS.raw_fields()  # the contract's (dwcp_inference/contracts/)
FEATURES = list(CONSENSUS.features)


def rows_to_windows(columns: dict[str, np.ndarray], window: int = WINDOW) -> dict[str, np.ndarray]:
    """CSV rows (one sample per row, per cluster) to windows [N, W] in time order, half-overlapping; a window
    is anomalous when any of its rows is."""
    out: dict[str, list] = {}
    for cluster in np.unique(columns["cluster_id"]):
        rows = np.flatnonzero(columns["cluster_id"] == cluster)
        rows = rows[np.argsort(columns["timestamp"][rows], kind="stable")]
        starts = np.arange(0, len(rows) - window + 1, max(window // 2, 1))
        if not len(starts):
            continue
        idx = rows[starts[:, None] + np.arange(window)]
        for k, col in columns.items():
            if k in ("cluster_id", "timestamp", "is_anomaly", "time_of_day", "day_of_week"):
                continue
            out.setdefault(k, []).append(np.asarray(col)[idx])
        out.setdefault("is_anomaly", []).append(np.asarray(columns["is_anomaly"])[idx].max(axis=1))
        out.setdefault("start", []).append(np.asarray(columns["timestamp"])[idx[:, 0]])
    if not out:
        raise ValueError(f"no cluster has {window} rows: a window needs that many")
    merged = {k: np.concatenate(v) for k, v in out.items()}
    order = np.argsort(merged.pop("start"), kind="stable")
    return {k: v[order] for k, v in merged.items()}


def train(columns: dict[str, np.ndarray], out: Path | None, *, source: str, seed: int = 0, epochs: int = 40,
          hidden: int = 32, lr: float = 3e-3, force: bool = False, quiet: bool = False,
          checkpoint_dir: Path | None = None) -> dict[str, Any]:
    import torch

    from dwcp_inference.export import onnx_export, publish

    from .loop import fit, predict
    from .models import LSTMAutoencoder, ReconstructionErrors

    seed_everything(seed)
    y = np.asarray(columns["is_anomaly"]).astype(int)
    tr, va, te = time_split(len(y))
    train_normal = np.flatnonzero(y[tr] == 0)
    features = fit_scaling(FEATURES, take(columns, train_normal))
    x = torch.from_numpy(transform(features, {k: v for k, v in columns.items() if np.ndim(v) == 2}))
    model = LSTMAutoencoder(x.shape[-1], hidden)
    mse = torch.nn.MSELoss()
    val_normal = torch.from_numpy(np.arange(va.start, va.stop)[y[va] == 0])
    summary = fit(model, lambda m, b: mse(m(b[0]), b[0]), (x[torch.from_numpy(train_normal)],),
                  (x[val_normal],), epochs=epochs, lr=lr, seed=seed, name=NAME,
                  checkpoint=Path(checkpoint_dir) / f"{NAME}.pt" if checkpoint_dir else None)
    with torch.no_grad():
        normal_error = ReconstructionErrors(model).raw_errors(x[torch.from_numpy(train_normal)]).mean(dim=0)
    scorer = ReconstructionErrors(model, torch.clamp(normal_error, min=1e-4)).eval()
    scores = predict(scorer, x)[0].numpy()
    threshold = best_accuracy_threshold(scores[va], y[va])

    # Baseline: a static threshold on the window's highest p99 latency, chosen on validation the same way.
    p99 = np.asarray(columns["latency_p99_ms"]).max(axis=1)
    static = best_accuracy_threshold(p99[va], y[va])
    rows = {"lstm autoencoder (ours)": detection(y[te], scores[te] >= threshold),
            "static p99 threshold": detection(y[te], p99[te] >= static)}
    kinds = np.asarray(columns.get("anomaly_kind", np.full(len(y), "")))[te]
    for kind in CONSENSUS_ANOMALIES:
        sel = kinds == kind
        if sel.any():
            rows["lstm autoencoder (ours)"][f"recall_{kind}"] = float(np.mean(scores[te][sel] >= threshold))
    report = table(f"{NAME}: held-out (last 15% in time, {te.stop - te.start} windows)", rows,
                   ["accuracy", "recall", "precision", "fpr", *[f"recall_{k}" for k in CONSENSUS_ANOMALIES]])
    if not quiet:
        print(report, flush=True)
    if out is None:  # tuning: judged on validation data only
        return {"model": NAME, "objective": 1 - detection(y[va], scores[va] >= threshold)["accuracy"], "test": rows,
                "report": report}
    ours = rows["lstm autoencoder (ours)"]
    meta = ModelMetadata(
        name=NAME, version="", framework={"name": "torch", "version": torch.__version__}, opset=onnx_export.OPSET,
        inputs=[], outputs=[], raw_fields=RAW_FIELDS, features=features, window=WINDOW, targets=[],
        decision={"threshold": threshold, "score_output": "score", "errors_output": "feature_errors",
                  "rule": "high latency when the mean over features of (window MSE / normal MSE) >= threshold"},
        metrics={"test": rows, "training": summary, "report": report,
                 "targets": {"accuracy": TARGET_ACCURACY, "met": ours["accuracy"] >= TARGET_ACCURACY}},
        training=provenance(columns, source, seed, len(y)), tolerance=1e-4,
        imputation=normal_medians(columns, [f.name for f in RAW_FIELDS if not f.vocabulary and f.name in columns],
                                  train_normal))
    held_out = x[te.start:te.start + 512]
    onnx_bytes = onnx_export.from_torch(scorer, held_out[:2], "window", ["score", "feature_errors"])
    score, errors = predict(scorer, held_out)
    static = rows["static p99 threshold"]
    failures = [f for f, bad in (
        (f"accuracy {ours['accuracy']:.3f} < {TARGET_ACCURACY}", ours["accuracy"] < TARGET_ACCURACY),
        (f"accuracy does not beat the static threshold's {static['accuracy']:.3f}",
         ours["accuracy"] <= static["accuracy"])) if bad]
    result = {"model": NAME, "test": rows, "report": report,
              "curves": {"scores": scores[te].tolist(), "labels": y[te].tolist(), "threshold": threshold}}
    meta.metrics["gate"] = gate(NAME, failures, force, result)
    version_dir = publish.publish(out, meta, onnx_bytes, held_out.numpy(),
                                  {"score": score.numpy(), "feature_errors": errors.numpy()})
    return {**result, "version": meta.version, "path": str(version_dir)}
