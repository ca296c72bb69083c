"""Both detectors on NAB (../shared/data/anomaly/nab): real AWS CloudWatch metrics with labelled anomaly windows.

A NAB series is one metric of one machine (CPU percent, bytes in, request counts), each at its own level, so
both detectors judge a value against the series' own previous day (HISTORY intervals of 5 minutes), through
the feature layer's relative transforms; the caller sends the series as NodeMetrics/ConsensusSample
`custom["value"]` with that history. The reliability detector scores the current value (an IsolationForest on
three relative features); the consensus detector scores the last hour (an LSTM autoencoder over the hour
relative to the day before it).

Split by file: the files at odd positions in name order are held out, the others train; training never sees a
held-out series. Scoring is per window, as NAB does: a window is found when any of its intervals is flagged;
an alarm is an hour with a flagged interval (so one long run of flags is many alarms, not one), true when a
flagged interval of that hour lies in a window. Both detectors and both baselines (a static threshold from
each series' first day, and a rolling z-score over the previous day) are scored on the same intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dwcp_inference.features import Feature, RawField, transform

from .common import gate, seed_everything
from .data.real import NabSeries
from .evaluation import table

HISTORY = 288  # one day of 5-minute intervals
HOUR = 12  # intervals per hour: the consensus detector's window, and the unit of alarms
START = HISTORY + HOUR - 1  # the first interval every method can judge
FIELD = "custom.value"
Z = 3.0  # the rolling z-score baseline flags |z| > Z
RAW_FIELDS = [RawField(FIELD)]
# The median/MAD z-score (history_robust_z) was tried too: on the training files it added false alarms.
RELIABILITY_FEATURES = [Feature(f"value_{kind[len('history_'):]}", FIELD, kind)
                        for kind in ("history_z", "history_short_z", "history_diff_z")]
CONSENSUS_FEATURES = [Feature("value", FIELD, "context_z", context=HISTORY)]
COLUMNS = ["window_recall", "windows_found", "false_alarms_per_day", "precision"]


def split_files(series: list[NabSeries]) -> tuple[list[NabSeries], list[NabSeries]]:
    """(training, held-out): held out are the files at odd positions in name order."""
    ordered = sorted(series, key=lambda s: s.name)
    return ordered[0::2], ordered[1::2]


def windows_of(s: NabSeries, length: int) -> np.ndarray:
    """The last `length` values at each judged interval (START onwards), shape [n - START, length]."""
    return sliding_window_view(s.value, length)[START - length + 1:]


def _ids(s: NabSeries) -> np.ndarray:
    """Per interval: the index of its labelled window, or -1."""
    ids = np.full(len(s.value), -1)
    for k, (a, b) in enumerate(s.windows):
        ids[(s.timestamp >= a) & (s.timestamp <= b)] = k
    return ids


def window_ids(s: NabSeries) -> np.ndarray:
    """Per judged interval: the index of its labelled window, or -1."""
    return _ids(s)[START:]


def score(series: list[NabSeries], flags: list[np.ndarray]) -> dict[str, float]:
    """Window recall, precision of alarms and false alarms per day over `series`, flags per judged interval."""
    windows = found = alarms = true = 0
    days = 0.0
    for s, f in zip(series, flags):
        ids = window_ids(s)
        hours = np.arange(len(ids)) // HOUR
        windows += len(np.unique(ids[ids >= 0]))
        found += len(np.unique(ids[f & (ids >= 0)]))
        alarms += len(np.unique(hours[f]))
        true += len(np.unique(hours[f & (ids >= 0)]))
        days += len(ids) * 5 / 1440
    return {"window_recall": found / max(windows, 1), "windows_found": f"{found}/{windows}",
            "false_alarms_per_day": (alarms - true) / days, "precision": true / max(alarms, 1)}


def baselines(series: list[NabSeries]) -> dict[str, list[np.ndarray]]:
    """Flags of the two operator baselines per series, over the judged intervals."""
    static, rolling = [], []
    for s in series:
        first = s.value[:HISTORY]
        spread = max(first.std(), 0.01 * abs(first.mean()), 1e-6)
        static.append(np.abs(s.value[START:] - first.mean()) > Z * spread)
        w = windows_of(s, HISTORY + 1)
        rolling.append(np.abs(transform([Feature("z", FIELD, "history_z")], {FIELD: w})[:, 0]) > Z)
    return {"static threshold (first day, |z| > 3)": static, "rolling z-score (previous day, |z| > 3)": rolling}


def pick_threshold(series: list[NabSeries], scores: list[np.ndarray], max_false_alarms: float) -> float:
    """The lowest threshold (most windows found) whose false alarms per day on `series` stay within the budget."""
    pooled = np.concatenate(scores)
    best = float(pooled.max()) + 1e-9
    for t in np.quantile(pooled, np.linspace(0.999, 0.8, 120)):
        if score(series, [s >= t for s in scores])["false_alarms_per_day"] > max_false_alarms:
            break
        best = float(t)
    return best


def comparison(name: str, series: list[NabSeries], ours: str, flags: list[np.ndarray],
               what: str) -> tuple[dict[str, dict[str, Any]], str]:
    rows = {ours: score(series, flags), **{k: score(series, v) for k, v in baselines(series).items()}}
    days = sum((len(s.value) - START) * 5 / 1440 for s in series)
    return rows, table(f"{name}: {what} ({len(series)} series, {days:.0f} days, windows scored as NAB does)", rows,
                       COLUMNS)


def beats_rolling(rows: dict[str, dict[str, Any]], ours: str) -> list[str]:
    """Gate failures against the rolling z-score: more windows found at equal or fewer false alarms."""
    z = rows["rolling z-score (previous day, |z| > 3)"]
    o = rows[ours]
    failures = []
    if o["window_recall"] <= z["window_recall"]:
        failures.append(f"window recall {o['window_recall']:.2f} not above the rolling z-score's "
                        f"{z['window_recall']:.2f}")
    if o["false_alarms_per_day"] > z["false_alarms_per_day"]:
        failures.append(f"{o['false_alarms_per_day']:.2f} false alarms per day, more than the rolling z-score's "
                        f"{z['false_alarms_per_day']:.2f}")
    return failures


def _normal(s: NabSeries) -> np.ndarray:
    """Judged intervals whose last hour lies outside every window."""
    return sliding_window_view(_ids(s) < 0, HOUR).all(axis=1)[START - HOUR + 1:]


def _provenance(series: list[NabSeries], source: str, seed: int) -> dict[str, Any]:
    from .common import provenance

    columns = {"series": np.concatenate([np.full(len(s.value), s.name) for s in series]),
               "value": np.concatenate([s.value for s in series])}
    p = provenance(columns, source, seed, len(columns["value"]))
    p["files"] = [s.name for s in series]
    return p


def train_reliability(series: list[NabSeries], out: Path, *, source: str, seed: int = 0, trees: int = 200,
                      force: bool = False, quiet: bool = False, **_: Any) -> dict[str, Any]:
    import sklearn
    from sklearn.ensemble import IsolationForest

    from dwcp_inference.export import onnx_export, publish
    from dwcp_inference.metadata import ModelMetadata

    name, ours = "reliability_detector", "isolation forest (ours)"
    train, test = split_files(series)

    def features(group: list[NabSeries]) -> list[np.ndarray]:
        return [transform(RELIABILITY_FEATURES, {FIELD: windows_of(s, HISTORY + 1)}) for s in group]

    x_train, x_test = features(train), features(test)
    normal = np.concatenate([x[_normal(s)] for s, x in zip(train, x_train)])
    est = IsolationForest(n_estimators=trees, random_state=seed).fit(normal)

    def scores(xs: list[np.ndarray]) -> list[np.ndarray]:
        return [-est.decision_function(x) for x in xs]

    budget = score(train, baselines(train)["rolling z-score (previous day, |z| > 3)"])["false_alarms_per_day"]
    threshold = pick_threshold(train, scores(x_train), budget)
    s_test = scores(x_test)
    rows, report = comparison(name, test, ours, [s >= threshold for s in s_test], "held-out files")
    if not quiet:
        print(report, flush=True)
    failures = beats_rolling(rows, ours)
    mean, std = normal.mean(axis=0), normal.std(axis=0) + 1e-9
    meta = ModelMetadata(
        name=name, version="", framework={"name": "scikit-learn", "version": sklearn.__version__},
        opset=onnx_export.OPSET, inputs=[], outputs=[], raw_fields=RAW_FIELDS, features=RELIABILITY_FEATURES,
        window=HISTORY + 1, targets=[],
        decision={"algorithm": "isolation_forest", "score_output": "scores", "score_column": 0, "score_sign": -1.0,
                  "threshold": threshold, "critical_threshold": float(np.quantile(np.concatenate(scores(x_train)),
                                                                                  0.9995)),
                  "normal": {f.name: [float(m), float(s)] for f, m, s in zip(RELIABILITY_FEATURES, mean, std)},
                  "rule": f"the current value of {FIELD} against the node's previous {HISTORY} intervals "
                          f"(send them as history); anomalous when the score >= threshold"},
        metrics={"test": rows, "report": report, "held_out_files": [s.name for s in test],
                 "threshold_rule": f"most windows found on the training files at no more false alarms per day "
                                   f"than the rolling z-score there ({budget:.2f})",
                 "targets": {"goal": "window recall above the rolling z-score's at equal or fewer false alarms",
                             "met": not failures}},
        training=_provenance(train, source, seed), tolerance=1e-4)
    result = {"model": name, "test": rows, "report": report}
    meta.metrics["gate"] = gate(name, failures, force, result)
    held_out = np.concatenate(x_test)[:512]
    version_dir = publish.publish(out, meta, onnx_export.from_sklearn(est, held_out.shape[1]), held_out,
                                  {"label": est.predict(held_out), "scores": est.decision_function(held_out)},
                                  exact=["label"])
    return {**result, "version": meta.version, "path": str(version_dir)}


def train_consensus(series: list[NabSeries], out: Path, *, source: str, seed: int = 0, epochs: int = 30,
                    hidden: int = 16, lr: float = 3e-3, force: bool = False, quiet: bool = False,
                    checkpoint_dir: Path | None = None, **_: Any) -> dict[str, Any]:
    import torch

    from dwcp_inference.export import onnx_export, publish
    from dwcp_inference.features import fit_scaling
    from dwcp_inference.metadata import ModelMetadata

    from .loop import fit, predict
    from .models import LSTMAutoencoder, ReconstructionErrors

    seed_everything(seed)
    name, ours = "consensus_latency", "lstm autoencoder (ours)"
    train, test = split_files(series)
    raw_train = [windows_of(s, HISTORY + HOUR) for s in train]
    normal_raw = np.concatenate([w[_normal(s)] for s, w in zip(train, raw_train)])
    features = fit_scaling(CONSENSUS_FEATURES, {FIELD: normal_raw})

    def inputs(ws: list[np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(transform(features, {FIELD: w})) for w in ws]

    normal = torch.from_numpy(transform(features, {FIELD: normal_raw}))
    order = torch.randperm(len(normal), generator=torch.Generator().manual_seed(seed))
    cut = int(len(order) * 0.85)
    model = LSTMAutoencoder(1, hidden, latent=4)
    mse = torch.nn.MSELoss()
    summary = fit(model, lambda m, b: mse(m(b[0]), b[0]), (normal[order[:cut]],), (normal[order[cut:]],),
                  epochs=epochs, lr=lr, seed=seed, name=name,
                  checkpoint=Path(checkpoint_dir) / f"{name}-nab.pt" if checkpoint_dir else None)
    with torch.no_grad():
        normal_error = ReconstructionErrors(model).raw_errors(normal[order[:cut]]).mean(dim=0)
    scorer = ReconstructionErrors(model, torch.clamp(normal_error, min=1e-4)).eval()

    def scores(xs: list[torch.Tensor]) -> list[np.ndarray]:
        return [predict(scorer, x)[0].numpy() for x in xs]

    x_train = inputs(raw_train)
    budget = score(train, baselines(train)["rolling z-score (previous day, |z| > 3)"])["false_alarms_per_day"]
    threshold = pick_threshold(train, scores(x_train), budget)
    x_test = inputs([windows_of(s, HISTORY + HOUR) for s in test])
    rows, report = comparison(name, test, ours, [s >= threshold for s in scores(x_test)], "held-out files")
    if not quiet:
        print(report, flush=True)
    failures = beats_rolling(rows, ours)
    meta = ModelMetadata(
        name=name, version="", framework={"name": "torch", "version": torch.__version__}, opset=onnx_export.OPSET,
        inputs=[], outputs=[], raw_fields=RAW_FIELDS, features=features, window=HISTORY + HOUR, targets=[],
        decision={"threshold": threshold, "score_output": "score", "errors_output": "feature_errors",
                  "rule": f"the last {HOUR} samples of {FIELD} against the {HISTORY} before them; high latency "
                          "when (window MSE / normal MSE) >= threshold"},
        metrics={"test": rows, "training": summary, "report": report, "held_out_files": [s.name for s in test],
                 "targets": {"goal": "window recall above the rolling z-score's at equal or fewer false alarms",
                             "met": not failures}},
        training=_provenance(train, source, seed), tolerance=1e-4)
    result = {"model": name, "test": rows, "report": report}
    meta.metrics["gate"] = gate(name, failures, force, result)
    held_out = torch.cat(x_test)[:512]
    score_t, errors = predict(scorer, held_out)
    version_dir = publish.publish(out, meta, onnx_export.from_torch(scorer, held_out[:2], "window",
                                                                    ["score", "feature_errors"]),
                                  held_out.numpy(), {"score": score_t.numpy(), "feature_errors": errors.numpy()})
    return {**result, "version": meta.version, "path": str(version_dir)}


JOBS: dict[str, Callable[..., dict[str, Any]]] = {"reliability": train_reliability, "consensus": train_consensus}
