"""Scoring a bandwidth forecast on held-out windows, as `evaluate` prints it: MAPE (outages skipped) of ours and
of each baseline, the reductions against last value and the harmonic mean, the p10/p90 coverage when the version
has quantile outputs, each with a 95% bootstrap interval, per trace, and the issue-18 goals met or missed."""

from __future__ import annotations

from typing import Any

import numpy as np

from .bandwidth_quantile import GOALS, goal_failures
from .evaluation import bandwidth_baselines, bootstrap_ratios, percentile_interval, resampling_units, table

RESAMPLES = 2000


def score(y: np.ndarray, windows: np.ndarray, links: np.ndarray, point: np.ndarray, floor: np.ndarray, *,
          ours: str, quantiles: dict[str, np.ndarray] | None = None, title: str) -> dict[str, Any]:
    """Rows are windows in time order within each link. `quantiles` maps bandwidth_mbps_p10/_p50/_p90 to forecasts."""
    y = np.asarray(y, float)
    ok = y > np.maximum(floor, 1e-9)
    guesses = {ours: np.asarray(point, float)}
    if quantiles and "bandwidth_mbps_p50" in quantiles:
        guesses[f"{ours.split(' ')[0]} p50"] = quantiles["bandwidth_mbps_p50"]
    guesses.update(bandwidth_baselines(windows))
    safe_y = np.where(ok, y, 1.0)
    errors = {name: np.where(ok, np.abs(g - y) / safe_y, 0.0) for name, g in guesses.items()}
    rows: dict[str, dict[str, float]] = {
        name: {"mape_pct": float(e.sum() / max(ok.sum(), 1) * 100),
               "rmse_mbps": float(np.sqrt(np.mean((guesses[name] - y) ** 2)))} for name, e in errors.items()}
    figures = {f"MAPE {name} %": (e * 100, ok) for name, e in errors.items()}
    if quantiles and "bandwidth_mbps_p10" in quantiles:
        below = y < quantiles["bandwidth_mbps_p10"]
        above = y > quantiles["bandwidth_mbps_p90"]
        rows[ours].update(below_p10_pct=float(below.mean() * 100), above_p90_pct=float(above.mean() * 100),
                          inside_p10_p90_pct=float((~below & ~above).mean() * 100))
        figures["actual below p10 %"] = (below * 100.0, np.ones(len(y)))
        figures["actual inside [p10, p90] %"] = ((~below & ~above) * 100.0, np.ones(len(y)))
    units, unit_text = resampling_units(links)
    draws = bootstrap_ratios(units, figures, resamples=RESAMPLES)
    for base in GOALS:  # a reduction is a ratio of two MAPEs: its interval comes from the same draws
        draws[f"MAPE reduction vs {base} %"] = (1 - draws[f"MAPE {ours} %"] / draws[f"MAPE {base} %"]) * 100
    values = {f"MAPE {n} %": r["mape_pct"] for n, r in rows.items()}
    values.update({f"MAPE reduction vs {b} %": (1 - rows[ours]["mape_pct"] / rows[b]["mape_pct"]) * 100
                   for b in GOALS})
    if "below_p10_pct" in rows[ours]:
        values["actual below p10 %"] = rows[ours]["below_p10_pct"]
        values["actual inside [p10, p90] %"] = rows[ours]["inside_p10_p90_pct"]
    ci = {name: {"value": values[name], **dict(zip(("ci95_low", "ci95_high"), percentile_interval(d)))}
          for name, d in draws.items()}
    per_link = {}
    for link in np.unique(links):
        sel = (links == link) & ok
        per_link[str(link)] = {"windows": int(np.sum(links == link)),
                               **{name: float(e[sel].sum() / max(sel.sum(), 1) * 100) for name, e in errors.items()}}
    lines, missed = goal_failures(rows, ours)
    target = {"goal": "MAPE " + " and ".join(f"{g:.0f}% below {b}" for b, g in GOALS.items())
                      + (", actual below p10 at most 12% of the time" if "below_p10_pct" in rows[ours] else ""),
              "reduction_pct": values["MAPE reduction vs harmonic_mean_5 %"], "met": not missed, "missed": missed}
    columns = [c for c in ("mape_pct", "rmse_mbps", "below_p10_pct", "above_p90_pct", "inside_p10_p90_pct")
               if any(c in r for r in rows.values())]
    report = "\n\n".join([
        table(title, rows, columns),
        table(f"95% bootstrap intervals ({RESAMPLES} resamples of {unit_text})", ci,
              ["value", "ci95_low", "ci95_high"]),
        table("MAPE % per trace (and the windows scored)", per_link, ["windows", *guesses]),
        "\n".join([*lines, f"target: {target['goal']} -> " + ("MISSED: " + "; ".join(missed) if missed else "met")])])
    return {"rows": rows, "ci95": ci, "resampling": unit_text, "per_link": per_link, "target": target,
            "windows": int(len(y)), "report": report}
