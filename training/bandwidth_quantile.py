"""Bandwidth forecaster for links it never saw: a small network over scale-free, multi-scale features of the
last WINDOW throughput samples, with a point forecast and p10/p50/p90 quantiles.

Why this and not the LSTM: on the mahimahi drives, 1-second throughput is close to a random walk, so the last
value is a strong forecast and what generalises across carriers is the *shape* of the recent past, not its
level. Every input is therefore in units of the window's own level (tail_rel_* transforms: the mean of the last
1, 2, 3, 5, 10 intervals and the variability over the last 5 and 30, relative to the window's mean), the network
predicts ln(REL_FLOOR + next / level) as a correction to the last value's, and the level multiplies back in
inside the exported graph. The level (tail_log_mean) is not an input of the network: a link's speed does not
carry across carriers (held out by drive on the seven shared drives, 5.4% below last value without it, 3.4% with;
docs/data.md), so the forecast scales with the window (a window 10x faster, a forecast 10x higher). Trained with
the relative error (MAPE, outages skipped) for the point forecast and pinball loss for the quantiles. Validation
holds out whole drives (a drive's up and down links together), never a time split within a link, and chooses the
hidden width there; the final model is refitted on every link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dwcp_inference.features import REL_FLOOR, Feature, RawField, Target, fit_scaling, transform
from dwcp_inference.metadata import ModelMetadata

from . import bandwidth
from .common import gate, provenance, seed_everything
from .evaluation import bandwidth_baselines, mape, rmse, table

NAME = "bandwidth_predictor"
KIND = "quantile_mlp"  # metadata decision["forecaster"]: evaluate names the row after it
OURS = "mlp (ours)"
WINDOW = 30
SPANS = (1, 2, 3, 5, 10)
QUANTILES = (0.1, 0.5, 0.9)
FEATURES = [Feature("level", "bandwidth_mbps", "tail_log_mean", span=WINDOW),
            *[Feature(f"rel_mean_{k}", "bandwidth_mbps", "tail_rel_log_mean", span=k) for k in SPANS],
            Feature("rel_std_5", "bandwidth_mbps", "tail_rel_log_std", span=5),
            Feature(f"rel_std_{WINDOW}", "bandwidth_mbps", "tail_rel_log_std", span=WINDOW)]
# The point forecast (what PredictBandwidth serves as predicted_bandwidth_mbps) and the quantiles.
TARGETS = [Target("bandwidth_mbps", min=0.0), *[Target(f"bandwidth_mbps_p{round(q * 100)}", min=0.0)
                                                 for q in QUANTILES]]
RAW_FIELD: RawField = next(f for f in bandwidth.RAW_FIELDS if f.name == "bandwidth_mbps")  # the contract's
HIDDEN_CHOICES = (0, 8)  # 0: linear; chosen on held-out drives
MAX_GROUPS = 4  # validation folds: drives in at most this many groups
# Targets on links training never saw (issue 18), reported by train and evaluate.
GOALS = {"last_value": 10.0, "harmonic_mean_5": 25.0}  # MAPE at least this many % below
P10_UNDERSHOOT = 0.12  # the actual below the p10 forecast at most this share of the time


def _model(n_in: int, hidden: int, features: list[Feature]) -> Any:
    import torch
    from torch import nn

    class QuantileForecaster(nn.Module):
        """Scaled features -> [point, p10, p50, p90] in Mbit/s. Inside: ln(REL_FLOOR + next/level) as the last
        interval's value plus a correction learned from the relative features (x[:, 1:]; the level x[:, 0] only
        restores the units); quantiles kept in order (p10 <= p50 <= p90)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(n_in - 1, 4) if hidden == 0 else nn.Sequential(  # all but the level
                nn.Linear(n_in - 1, hidden), nn.ReLU(), nn.Linear(hidden, 4))
            lvl, last = features[0], features[1]  # tail_log_mean over the window, tail_rel_log_mean of span 1
            self.register_buffer("scale", torch.tensor([lvl.mean, lvl.std, last.mean, last.std], dtype=torch.float32))
            self.register_buffer("calibration", torch.ones(4))  # factors on [point, p10, p50, p90]: calibrate()

        def relative(self, x: torch.Tensor) -> torch.Tensor:
            s = self.scale
            last = x[:, 1] * s[3] + s[2]
            o = self.net(x[:, 1:])
            p50 = last + o[:, 2]
            return torch.stack([last + o[:, 0], p50 - nn.functional.softplus(o[:, 1]), p50,
                                p50 + nn.functional.softplus(o[:, 3])], dim=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            level = torch.exp(x[:, 0] * self.scale[1] + self.scale[0])
            return torch.clamp(torch.exp(self.relative(x)) - REL_FLOOR, min=0.0) * level[:, None] * self.calibration

    return QuantileForecaster()


def _fit(x: np.ndarray, y: np.ndarray, level: np.ndarray, ok: np.ndarray, features: list[Feature], hidden: int,
         seed: int, epochs: int) -> Any:
    import torch

    torch.manual_seed(seed)
    model = _model(x.shape[1], hidden, features)
    xt = torch.from_numpy(x.astype(np.float32))
    rel = torch.from_numpy((y / level).astype(np.float32))
    target = torch.log(rel + REL_FLOOR)
    okt = torch.from_numpy(ok)
    q = torch.tensor(QUANTILES, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):  # full batch: a few thousand to a few hundred thousand rows of 8 features
        opt.zero_grad()
        out = model.relative(xt)
        point = torch.exp(out[:, 0]) - REL_FLOOR
        relative_error = (torch.abs(point - rel) / torch.clamp(rel, min=1e-6))[okt].mean()
        d = target[:, None] - out[:, 1:]
        pinball = torch.maximum(q * d, (q - 1) * d).mean()
        (relative_error + pinball).backward()
        opt.step()
    model.eval()
    return model


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x.astype(np.float32))).numpy().astype(np.float64)


def calibration(y: np.ndarray, pred: np.ndarray) -> list[float]:
    """Factors on [point, p10, p50, p90] that make the held-out share of actuals below p10 (above p90) the
    nominal 10%: a split-conformal correction fitted on the links each prediction was held out from. p10 is only
    lowered and p90 only raised (never past p50)."""
    def factor(fc: np.ndarray, share: float) -> float:
        pos = fc > 0
        return float(np.quantile(y[pos] / fc[pos], share)) if pos.any() else 1.0

    return [1.0, float(np.clip(factor(pred[:, 1], QUANTILES[0]), 0.2, 1.0)), 1.0,
            float(np.clip(factor(pred[:, 3], QUANTILES[2]), 1.0, 5.0))]


def cross_fitted(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """`pred` with each group's rows calibrated by factors fitted on the other groups only, so the interval's
    coverage measured on them is out of sample (calibrated and measured on the same rows, it is nominal by
    construction)."""
    out = pred.copy()
    for g in np.unique(groups):
        held = groups == g
        out[held] = pred[held] * calibration(y[~held], pred[~held])
    return out


def drive_of(link: str) -> str:
    """The drive a link was recorded on: mahimahi names a drive's two directions NAME.up and NAME.down."""
    stem, _, direction = link.rpartition(".")
    return stem if stem and direction in ("up", "down") else link


def link_groups(links: np.ndarray, rows_per_link: dict[str, int]) -> np.ndarray:
    """A validation group per row: whole drives (a drive's up and down links together, so neither direction
    is predicted by a model that saw the other) dealt into at most MAX_GROUPS groups (largest first, each to the
    smallest group so far); a single drive is cut into MAX_GROUPS contiguous blocks instead."""
    rows_per_drive: dict[str, int] = {}
    for link, n in rows_per_link.items():
        rows_per_drive[drive_of(link)] = rows_per_drive.get(drive_of(link), 0) + n
    names = sorted(rows_per_drive, key=lambda k: (-rows_per_drive[k], k))
    if len(names) == 1:
        n = len(links)
        return np.minimum(np.arange(n) * MAX_GROUPS // max(n, 1), MAX_GROUPS - 1)
    k = min(MAX_GROUPS, len(names))
    sizes, group_of = [0] * k, {}
    for name in names:
        g = int(np.argmin(sizes))
        group_of[name], sizes[g] = g, sizes[g] + rows_per_drive[name]
    return np.array([group_of[drive_of(str(link))] for link in links])


def forecast_table(y: np.ndarray, windows: np.ndarray, pred: np.ndarray, floor: np.ndarray,
                   ours: str = OURS) -> dict[str, dict[str, float]]:
    """MAPE (outages skipped) and RMSE of the point forecast and the p50 beside the baselines; the share of actuals
    below p10, above p90 and inside [p10, p90]."""
    rows = {ours: {"mape_pct": mape(y, pred[:, 0], floor), "rmse_mbps": rmse(y, pred[:, 0]),
                   "below_p10_pct": float(np.mean(y < pred[:, 1]) * 100),
                   "above_p90_pct": float(np.mean(y > pred[:, 3]) * 100),
                   "inside_p10_p90_pct": float(np.mean((y >= pred[:, 1]) & (y <= pred[:, 3])) * 100)},
            f"{ours.split(' ')[0]} p50": {"mape_pct": mape(y, pred[:, 2], floor), "rmse_mbps": rmse(y, pred[:, 2])}}
    for name, guess in bandwidth_baselines(windows).items():
        rows[name] = {"mape_pct": mape(y, guess, floor), "rmse_mbps": rmse(y, guess)}
    return rows


def goal_failures(rows: dict[str, dict[str, float]], ours: str = OURS) -> tuple[list[str], list[str]]:
    """(lines saying by how much ours won or lost against each baseline and the p10 goal, the goals missed)."""
    lines, missed = [], []
    m = rows[ours]["mape_pct"]
    for base, goal in GOALS.items():
        cut = (1 - m / rows[base]["mape_pct"]) * 100
        lines.append(f"MAPE {m:.2f}% vs {base} {rows[base]['mape_pct']:.2f}%: {cut:+.1f}% "
                     f"({'below' if cut > 0 else 'NOT below'}; goal {goal:.0f}% below)")
        if cut < goal:
            missed.append(f"MAPE {m:.2f}% is {abs(cut):.1f}% {'below' if cut > 0 else 'above'} {base}'s "
                          f"{rows[base]['mape_pct']:.2f}% (goal {goal:.0f}% below)")
    under = rows[ours].get("below_p10_pct")
    if under is not None:
        lines.append(f"actual below p10 {under:.1f}% of the time (goal at most {P10_UNDERSHOOT:.0%})")
        if under > P10_UNDERSHOOT * 100:
            missed.append(f"actual below p10 {under:.1f}% of the time (goal at most {P10_UNDERSHOOT:.0%})")
    return lines, missed


def train(columns: dict[str, np.ndarray], out: Path | None, *, source: str, seed: int = 0, epochs: int = 300,
          force: bool = False, quiet: bool = False) -> dict[str, Any]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a network this small trains several times faster on one thread than on more
    try:
        return _train(columns, out, source=source, seed=seed, epochs=epochs, force=force, quiet=quiet)
    finally:
        torch.set_num_threads(threads)


def _train(columns: dict[str, np.ndarray], out: Path | None, *, source: str, seed: int, epochs: int, force: bool,
           quiet: bool) -> dict[str, Any]:
    import torch

    from dwcp_inference.export import onnx_export, publish

    seed_everything(seed)
    bw_only = {"link_id": columns["link_id"], "timestamp": columns["timestamp"],
               "bandwidth_mbps": columns["bandwidth_mbps"]}
    wins, nxt, _ = bandwidth.make_windows(bw_only, WINDOW)
    y, w, links = nxt["bandwidth_mbps"].astype(np.float64), wins["bandwidth_mbps"].astype(np.float64), nxt["link_id"]
    floor = bandwidth.outage_floor(wins, nxt)
    ok = y > np.maximum(floor, 1e-9)
    level = np.maximum(w.mean(axis=1), 1e-6)
    counts = {str(k): int(v) for k, v in zip(*np.unique(links, return_counts=True))}
    groups = link_groups(links, counts)

    def held_out_predictions(hidden: int) -> np.ndarray:
        pred = np.zeros((len(y), 4))
        for g in np.unique(groups):
            fit_rows, held = groups != g, groups == g
            feats = fit_scaling(FEATURES, {"bandwidth_mbps": w[fit_rows]})
            x = transform(feats, {"bandwidth_mbps": w})
            model = _fit(x[fit_rows], y[fit_rows], level[fit_rows], ok[fit_rows], feats, hidden, seed, epochs)
            pred[held] = _predict(model, x[held])
        return pred

    tried = {h: held_out_predictions(h) for h in HIDDEN_CHOICES}
    scores = {h: mape(y, p[:, 0], floor) for h, p in tried.items()}
    hidden = min(scores, key=lambda h: (scores[h], h))
    factors = calibration(y, tried[hidden])
    val = forecast_table(y, w, tried[hidden] * factors, floor)
    # the interval's figures (what `confidence` states and the p10 goal) from a calibration that never saw the rows
    interval = forecast_table(y, w, cross_fitted(y, tried[hidden], groups), floor)[OURS]
    val[OURS].update({k: interval[k] for k in ("below_p10_pct", "above_p90_pct", "inside_p10_p90_pct")})
    drives = {drive_of(link) for link in counts}
    how = (f"{len(np.unique(groups))} groups of whole drives, {len(drives)} drives of {len(counts)} links"
           if len(drives) > 1 else f"{MAX_GROUPS} contiguous blocks of the one drive")
    lines, missed = goal_failures(val)
    report = "\n\n".join([
        table(f"{NAME}: validation on held-out links ({how}, each predicted by a model fitted on the others; "
              f"{len(y)} windows; hidden width {hidden} chosen there, MAPE by width: "
              + ", ".join(f"{h}: {s:.2f}%" for h, s in scores.items())
              + f"; p10 x {factors[1]:.3f} and p90 x {factors[3]:.3f} calibrated there; "
              "the interval's shares measured with factors fitted on the other groups)", val,
              ["mape_pct", "rmse_mbps", "below_p10_pct", "above_p90_pct", "inside_p10_p90_pct"]),
        "\n".join(lines)])
    if not quiet:
        print(report, flush=True)
    if out is None:  # tuning: judged on validation data only
        return {"model": NAME, "objective": val[OURS]["mape_pct"], "test": val, "report": report}

    features = fit_scaling(FEATURES, {"bandwidth_mbps": w})
    x = transform(features, {"bandwidth_mbps": w})
    model = _fit(x, y, level, ok, features, hidden, seed, epochs)
    model.calibration.copy_(torch.tensor(factors, dtype=torch.float32))
    steps = np.diff(columns["timestamp"][:WINDOW + 1]).astype("timedelta64[ms]").astype(float)
    interval = float(np.median(steps)) / 1e3
    meta = ModelMetadata(
        name=NAME, version="", framework={"name": "torch", "version": torch.__version__}, opset=onnx_export.OPSET,
        inputs=[], outputs=[], raw_fields=[RAW_FIELD], features=features, window=WINDOW, targets=TARGETS,
        decision={"interval_seconds": interval, "validation_mape_pct": val[OURS]["mape_pct"],
                  "outage_floor": bandwidth.OUTAGE_FLOOR, "forecaster": KIND,
                  "quantiles": {f"bandwidth_mbps_p{round(q * 100)}": q for q in QUANTILES},
                  # on held-out drives, calibrated on the others: the share of actuals inside [p10, p90]
                  "interval_coverage": val[OURS]["inside_p10_p90_pct"] / 100,
                  "confidence": "(1 - min(validation_mape_pct/100, 1)) / (1 + coefficient of variation of the "
                                "window's bandwidth)"},
        metrics={"validation": val, "hidden": hidden, "hidden_scores": scores, "calibration": factors,
                 "validation_groups": [sorted(set(links[groups == g].astype(str))) for g in np.unique(groups)],
                 "report": report},
        training={**provenance(columns, source, seed, len(y)), "links": sorted(counts)}, tolerance=1e-4)
    rng = np.random.default_rng(seed)
    held_out = x[rng.permutation(len(x))[:512]]
    onnx_bytes = onnx_export.from_torch(model, torch.from_numpy(held_out[:2]), "window", ["next"])
    reference = {"next": _predict(model, held_out).astype(np.float32)}
    failures = missed
    first = links == sorted(counts)[0]
    guesses = bandwidth_baselines(w[first][:2000])
    curves = {"actual": y[first][:2000].tolist(), "predicted": tried[hidden][first, 0][:2000].tolist(),
              "baselines": {k: v.tolist() for k, v in guesses.items()}}
    result = {"model": NAME, "test": val, "report": report, "curves": curves}
    meta.metrics["gate"] = gate(NAME, failures, force, result)
    version_dir = publish.publish(out, meta, onnx_bytes, held_out.astype(np.float32), reference)
    return {**result, "version": meta.version, "path": str(version_dir)}
