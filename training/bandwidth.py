"""Bandwidth predictor: an LSTM over the last W samples of a link predicts the next sample's bandwidth,
latency, loss and jitter. Evaluated per link against last value, moving average and harmonic mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dwcp_inference.features import (Feature, RawField, Target, decode_targets, encode_targets, fit_scaling,
                                     transform)
from dwcp_inference.metadata import ModelMetadata

from .common import provenance, seed_everything, take, time_split
from .evaluation import bandwidth_baselines, mape, rmse, table

NAME = "bandwidth_predictor"
WINDOW = 24
RAW_FIELDS = [
    RawField("bandwidth_mbps", 0.0, 1e7), RawField("latency_ms", 0.0, 1e6), RawField("packet_loss", 0.0, 1.0),
    RawField("jitter_ms", 0.0, 1e6), RawField("time_of_day", 0, 23), RawField("day_of_week", 0, 6),
]
FEATURES = [
    Feature("bandwidth", "bandwidth_mbps", "log1p"), Feature("latency", "latency_ms", "log1p"),
    Feature("loss", "packet_loss", "log"), Feature("jitter", "jitter_ms", "log1p"),
    Feature("tod_sin", "time_of_day", "sin", period=24), Feature("tod_cos", "time_of_day", "cos", period=24),
    Feature("dow_sin", "day_of_week", "sin", period=7), Feature("dow_cos", "day_of_week", "cos", period=7),
]
TARGETS = [
    Target("bandwidth_mbps", "log1p", min=0.0), Target("latency_ms", "log1p", min=0.0),
    Target("packet_loss", "log", min=0.0, max=1.0), Target("jitter_ms", "log1p", min=0.0),
]


def make_windows(columns: dict[str, np.ndarray], window: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                                        np.ndarray]:
    """Per link, every window of `window` samples and the sample after it, in time order per link.
    Returns (window columns [N, W], next-sample columns [N], the split index per row: 0 train, 1 val, 2 test)."""
    wins: dict[str, list] = {k: [] for k in columns}
    nxt: dict[str, list] = {k: [] for k in columns}
    split = []
    for link in np.unique(columns["link_id"]):
        rows = np.flatnonzero(columns["link_id"] == link)
        rows = rows[np.argsort(columns["timestamp"][rows], kind="stable")]
        n = len(rows) - window
        if n <= 0:
            continue
        idx = rows[np.arange(n)[:, None] + np.arange(window)]
        for k, col in columns.items():
            wins[k].append(np.asarray(col)[idx])
            nxt[k].append(np.asarray(col)[rows[window:]])
        part = np.zeros(n, dtype=int)
        _, val, test = time_split(n)
        part[val], part[test] = 1, 2
        split.append(part)
    return ({k: np.concatenate(v) for k, v in wins.items()}, {k: np.concatenate(v) for k, v in nxt.items()},
            np.concatenate(split))


def train(columns: dict[str, np.ndarray], out: Path, *, source: str, seed: int = 0, epochs: int = 30,
          hidden: int = 64, quiet: bool = False) -> dict[str, Any]:
    import torch

    from dwcp_inference.export import onnx_export, publish

    from .loop import fit, predict
    from .models import BandwidthLSTM

    seed_everything(seed)
    wins, nxt, split = make_windows(columns, WINDOW)
    train_rows = split == 0
    features = fit_scaling(FEATURES, take(wins, train_rows))
    # Targets share the scaling of the features they continue (see BandwidthLSTM).
    targets = [Target(t.name, t.transform, f.mean, f.std, t.min, t.max) for t, f in zip(TARGETS, features)]
    x = torch.from_numpy(transform(features, wins))
    y = torch.from_numpy(encode_targets(targets, nxt))
    parts = [torch.from_numpy(np.flatnonzero(split == i)) for i in range(3)]
    model = BandwidthLSTM(x.shape[-1], len(targets), hidden=hidden)
    mse = torch.nn.MSELoss()
    summary = fit(model, lambda m, b: mse(m(b[0]), b[1]), (x[parts[0]], y[parts[0]]), (x[parts[1]], y[parts[1]]),
                  epochs=epochs, seed=seed, name=NAME)

    def domain(rows: torch.Tensor) -> dict[str, np.ndarray]:
        return decode_targets(targets, predict(model, x[rows]).numpy())

    val_pred, test_pred = domain(parts[1]), domain(parts[2])
    val_mape = mape(nxt["bandwidth_mbps"][parts[1].numpy()], val_pred["bandwidth_mbps"])
    test_rows = parts[2].numpy()
    y_bw = nxt["bandwidth_mbps"][test_rows]
    rows = {"lstm (ours)": {"mape_pct": mape(y_bw, test_pred["bandwidth_mbps"]),
                            "rmse_mbps": rmse(y_bw, test_pred["bandwidth_mbps"])}}
    for name, guess in bandwidth_baselines(wins["bandwidth_mbps"][test_rows]).items():
        rows[name] = {"mape_pct": mape(y_bw, guess), "rmse_mbps": rmse(y_bw, guess)}
    for t in ("latency_ms", "jitter_ms"):
        rows["lstm (ours)"][f"{t}_mape_pct"] = mape(nxt[t][test_rows], test_pred[t])
        rows["last_value"][f"{t}_mape_pct"] = mape(nxt[t][test_rows], wins[t][test_rows, -1])
    best_baseline = min(v["mape_pct"] for k, v in rows.items() if k != "lstm (ours)")
    report = table(f"{NAME}: held-out (last 15% of each link, {len(test_rows)} windows)", rows,
                   ["mape_pct", "rmse_mbps", "latency_ms_mape_pct", "jitter_ms_mape_pct"])
    if not quiet:
        print(report, flush=True)

    interval = float(np.median(np.diff(columns["timestamp"][:WINDOW + 1]).astype("timedelta64[s]").astype(float)))
    meta = ModelMetadata(
        name=NAME, version="", framework={"name": "torch", "version": torch.__version__}, opset=onnx_export.OPSET,
        inputs=[], outputs=[], raw_fields=RAW_FIELDS, features=features, window=WINDOW, targets=targets,
        decision={"interval_seconds": interval, "validation_mape_pct": val_mape,
                  "confidence": "(1 - min(validation_mape_pct/100, 1)) / (1 + coefficient of variation of the "
                                "window's bandwidth)"},
        metrics={"test": rows, "baselines_beaten": rows["lstm (ours)"]["mape_pct"] < best_baseline,
                 "training": summary, "report": report},
        training=provenance(columns, source, seed, len(split)), tolerance=1e-4)
    held_out = x[parts[2]][:max(publish.MIN_PARITY_INPUTS, 256)]
    onnx_bytes = onnx_export.from_torch(model, held_out[:2], "window", ["next"])
    reference = {"next": predict(model, held_out).numpy()}
    version_dir = publish.publish(out, meta, onnx_bytes, held_out.numpy(), reference)
    return {"model": NAME, "version": meta.version, "path": str(version_dir), "test": rows, "report": report}
