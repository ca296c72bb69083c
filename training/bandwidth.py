"""Bandwidth predictor: an LSTM over the last W samples of a link predicts the next sample's bandwidth,
latency, loss and jitter. Evaluated per link against last value, moving average and harmonic mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dwcp_inference.contracts import BANDWIDTH
from dwcp_inference.features import (Feature, RawField, Target, decode_targets, encode_targets, fit_scaling,
                                     transform)
from dwcp_inference.metadata import ModelMetadata

from .common import gate, provenance, seed_everything, take, time_split
from .evaluation import bandwidth_baselines, mape, rmse, table

NAME = BANDWIDTH.name
WINDOW = BANDWIDTH.window
RAW_FIELDS = BANDWIDTH.raw_fields()  # the contract's (dwcp_inference/contracts/)
FEATURES = list(BANDWIDTH.features)
TARGETS = list(BANDWIDTH.targets)


LINK_FIELDS = ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms")
OUTAGE_FLOOR = 0.05  # MAPE skips intervals below this share of the link's median throughput (outages)


def spec(columns: dict[str, np.ndarray], timed: bool) -> tuple[list[RawField], list[Feature], list[Target]]:
    """The raw fields, features and targets the data supports: the link metrics it has (bandwidth at least),
    and the time of day and week when its timestamps are real wall-clock times."""
    fields = [f for f in LINK_FIELDS if f in columns]
    if "bandwidth_mbps" not in fields:
        raise ValueError("bandwidth data needs a bandwidth_mbps column")
    time_fields = ("time_of_day", "day_of_week") if timed else ()
    raw = [r for r in RAW_FIELDS if r.name in fields or r.name in time_fields]
    feats = [f for f in FEATURES if f.source in fields or (f.source in time_fields)]
    return raw, feats, [t for t in TARGETS if t.name in fields]


def outage_floor(wins: dict[str, np.ndarray], nxt: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, the throughput below which an interval counts as an outage for MAPE (where any relative
    error is unbounded): OUTAGE_FLOOR of its link's median."""
    floor = np.zeros(len(nxt["bandwidth_mbps"]))
    for link in np.unique(nxt["link_id"]):
        rows = nxt["link_id"] == link
        floor[rows] = OUTAGE_FLOOR * np.median(nxt["bandwidth_mbps"][rows])
    return floor


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


def train(columns: dict[str, np.ndarray], out: Path | None, *, source: str, seed: int = 0, epochs: int = 30,
          hidden: int = 64, lr: float = 3e-3, timed: bool = True, force: bool = False, quiet: bool = False,
          checkpoint_dir: Path | None = None, forecaster: str = "auto") -> dict[str, Any]:
    """forecaster: "lstm" (this module), "quantile_mlp" (bandwidth_quantile.py: bandwidth alone, p10/p50/p90,
    validated on held-out drives; epochs and hidden are the LSTM's and do not apply), or "auto": the quantile
    forecaster for data with no link metric but bandwidth (mahimahi traces), the LSTM otherwise (it also forecasts
    latency, loss and jitter)."""
    if forecaster == "auto":
        forecaster = "lstm" if set(LINK_FIELDS[1:]) & set(columns) else "quantile_mlp"
    if forecaster == "quantile_mlp":
        from . import bandwidth_quantile

        return bandwidth_quantile.train(columns, out, source=source, seed=seed, force=force, quiet=quiet)
    if forecaster != "lstm":
        raise ValueError(f"forecaster {forecaster!r}: expected auto, lstm or quantile_mlp")
    import torch

    from dwcp_inference.export import onnx_export, publish

    from .loop import fit, predict
    from .models import BandwidthLSTM

    seed_everything(seed)
    raw_fields, feature_spec, target_spec = spec(columns, timed)
    wins, nxt, split = make_windows(columns, WINDOW)
    train_rows = split == 0
    features = fit_scaling(feature_spec, take(wins, train_rows))
    # Targets share the scaling of the features they continue (see BandwidthLSTM).
    targets = [Target(t.name, t.transform, f.mean, f.std, t.min, t.max) for t, f in zip(target_spec, features)]
    x = torch.from_numpy(transform(features, wins))
    y = torch.from_numpy(encode_targets(targets, nxt))
    parts = [torch.from_numpy(np.flatnonzero(split == i)) for i in range(3)]
    model = BandwidthLSTM(x.shape[-1], len(targets), hidden=hidden)
    # The loss is what the model is judged on: the relative error of the bandwidth (outages skipped), plus L1
    # on the log scale of the other targets.
    floor = outage_floor(wins, nxt)
    true_bw = torch.from_numpy(nxt["bandwidth_mbps"].astype(np.float32))
    weight = torch.from_numpy((nxt["bandwidth_mbps"] > floor).astype(np.float32)) / torch.clamp(true_bw, min=1e-3)
    bw = targets[0]

    def loss(m: torch.nn.Module, b: tuple[torch.Tensor, ...]) -> torch.Tensor:
        out = m(b[0])
        pred_bw = torch.expm1(out[:, 0] * bw.std + bw.mean)
        rel = (torch.abs(pred_bw - b[2]) * b[3]).sum() / torch.clamp((b[3] > 0).sum(), min=1)
        rest = torch.abs(out[:, 1:] - b[1][:, 1:]).mean() if out.shape[1] > 1 else 0.0
        return rel + rest

    tensors = (x, y, true_bw, weight)
    summary = fit(model, loss, tuple(t[parts[0]] for t in tensors), tuple(t[parts[1]] for t in tensors),
                  epochs=epochs, lr=lr, seed=seed, name=NAME,
                  checkpoint=Path(checkpoint_dir) / f"{NAME}.pt" if checkpoint_dir else None)

    def domain(rows: torch.Tensor) -> dict[str, np.ndarray]:
        return decode_targets(targets, predict(model, x[rows]).numpy())

    val_pred, test_pred = domain(parts[1]), domain(parts[2])
    val_rows, test_rows = parts[1].numpy(), parts[2].numpy()
    val_mape = mape(nxt["bandwidth_mbps"][val_rows], val_pred["bandwidth_mbps"], floor[val_rows])
    rows = bandwidth_table(nxt, wins, test_pred, test_rows, floor)
    best_baseline = min(v["mape_pct"] for k, v in rows.items() if k != "lstm (ours)")
    on_val = bandwidth_table(nxt, wins, val_pred, val_rows, floor)
    margins = [f"validation ({len(val_rows)} windows): MAPE {val_mape:.2f}% vs {b} {on_val[b]['mape_pct']:.2f}%: "
               f"{(1 - val_mape / on_val[b]['mape_pct']) * 100:+.1f}%" for b in ("last_value", "harmonic_mean_5")]
    report = table(f"{NAME}: held-out (last 15% of each link, {len(test_rows)} windows)", rows,
                   ["mape_pct", "rmse_mbps", "latency_ms_mape_pct", "jitter_ms_mape_pct"])
    report += "\n\n" + "\n".join(margins)
    if not quiet:
        print(report, flush=True)
    if out is None:  # tuning: judged on validation data only
        return {"model": NAME, "objective": val_mape, "test": rows, "report": report}

    interval = float(np.median(np.diff(columns["timestamp"][:WINDOW + 1]).astype("timedelta64[ms]").astype(float))) / 1e3
    meta = ModelMetadata(
        name=NAME, version="", framework={"name": "torch", "version": torch.__version__}, opset=onnx_export.OPSET,
        inputs=[], outputs=[], raw_fields=raw_fields, features=features, window=WINDOW, targets=targets,
        decision={"interval_seconds": interval, "validation_mape_pct": val_mape, "outage_floor": OUTAGE_FLOOR,
                  "confidence": "(1 - min(validation_mape_pct/100, 1)) / (1 + coefficient of variation of the "
                                "window's bandwidth)"},
        metrics={"test": rows, "baselines_beaten": rows["lstm (ours)"]["mape_pct"] < best_baseline,
                 "training": summary, "report": report},
        training=provenance(columns, source, seed, len(split)), tolerance=1e-4)
    held_out = x[torch.cat([parts[2], parts[1]])][:512]  # test windows first, validation ones if too few
    onnx_bytes = onnx_export.from_torch(model, held_out[:2], "window", ["next"])
    reference = {"next": predict(model, held_out).numpy()}
    best = min((k for k in rows if k != "lstm (ours)"), key=lambda k: rows[k]["mape_pct"])
    failures = [] if rows["lstm (ours)"]["mape_pct"] < rows[best]["mape_pct"] else [
        f"MAPE {rows['lstm (ours)']['mape_pct']:.2f}% does not beat {best}'s {rows[best]['mape_pct']:.2f}%"]
    # The first 2000 held-out intervals (of the first link) for the plot, with every baseline's guess.
    guesses = bandwidth_baselines(wins["bandwidth_mbps"][test_rows[:2000]])
    curves = {"actual": nxt["bandwidth_mbps"][test_rows][:2000].tolist(),
              "predicted": test_pred["bandwidth_mbps"][:2000].tolist(),
              "baselines": {k: v.tolist() for k, v in guesses.items()}}
    result = {"model": NAME, "test": rows, "report": report, "curves": curves}
    meta.metrics["gate"] = gate(NAME, failures, force, result)
    version_dir = publish.publish(out, meta, onnx_bytes, held_out.numpy(), reference)
    return {**result, "version": meta.version, "path": str(version_dir)}


def bandwidth_table(nxt: dict[str, np.ndarray], wins: dict[str, np.ndarray], pred: dict[str, np.ndarray],
                    rows: np.ndarray, floor: np.ndarray) -> dict[str, dict[str, float]]:
    """Held-out bandwidth MAPE (outages skipped) and RMSE of the model beside the baselines, on `rows`."""
    y = nxt["bandwidth_mbps"][rows]
    out = {"lstm (ours)": {"mape_pct": mape(y, pred["bandwidth_mbps"], floor[rows]),
                           "rmse_mbps": rmse(y, pred["bandwidth_mbps"])}}
    for name, guess in bandwidth_baselines(wins["bandwidth_mbps"][rows]).items():
        out[name] = {"mape_pct": mape(y, guess, floor[rows]), "rmse_mbps": rmse(y, guess)}
    for t in ("latency_ms", "jitter_ms"):
        if t in pred and t in nxt:
            out["lstm (ours)"][f"{t}_mape_pct"] = mape(nxt[t][rows], pred[t])
            out["last_value"][f"{t}_mape_pct"] = mape(nxt[t][rows], wins[t][rows, -1])
    return out
