"""What starts a retraining, each trigger configurable and reported with its evidence (docs/continuous-training.md):

- drift: the champion's input drift (the largest per-feature RMS of standardised inputs, 1 = the training data)
  above `drift_threshold` for `drift_checks` consecutive checks;
- accuracy: the champion's live figure worse than its own held-out figure by `accuracy_margin` (relative), over
  at least `accuracy_min_outcomes` outcomes;
- schedule: `schedule_seconds` since the last training (0: off);
- rows: at least `min_new_rows` new rows in the data directory since the last training (0: off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# model -> (live figure, held-out figure, lower is better)
FIGURES = {"bandwidth_predictor": ("mape", "mape_pct", True),
           "compression_selector": ("accuracy", "accuracy", False),
           "reliability_detector": ("recall", "recall", False),
           "consensus_latency": ("recall", "recall", False)}


@dataclass
class TriggerConfig:
    drift_threshold: float = 2.0
    drift_checks: int = 3
    accuracy_margin: float = 0.25
    accuracy_min_outcomes: int = 50
    schedule_seconds: float = 0.0
    min_new_rows: int = 0


@dataclass
class Observation:
    """What one check saw of the champion (the version answering by default)."""

    now: float
    drift: dict[str, float] = field(default_factory=dict)  # feature -> RMS
    live: dict[str, float] = field(default_factory=dict)
    outcomes: int = 0
    held_out: float | None = None
    new_rows: int = 0
    last_trained: float | None = None


@dataclass
class Fired:
    trigger: str
    message: str
    evidence: dict[str, Any]


def held_out_figure(model: str, metrics: dict[str, Any]) -> float | None:
    """The version's own held-out figure from its metadata's metrics (the row of the served model)."""
    _, key, _ = FIGURES[model]
    for name, row in (metrics.get("test") or {}).items():
        if ("(ours)" in name or "(served)" in name) and isinstance(row, dict) and key in row:
            return float(row[key])
    return None


def accuracy_worse(model: str, live: dict[str, float], outcomes: int, held_out: float | None, margin: float,
                   min_outcomes: int) -> dict[str, Any] | None:
    """The evidence that the live figure is worse than the held-out one by more than `margin`, else None."""
    live_key, _, lower_better = FIGURES[model]
    if held_out is None or live_key not in live or outcomes < min_outcomes:
        return None
    value = live[live_key]
    limit = held_out * (1 + margin) if lower_better else held_out * (1 - margin)
    worse = value > limit if lower_better else value < limit
    if not worse:
        return None
    return {"live": {live_key: round(value, 4)}, "held_out": round(held_out, 4), "limit": round(limit, 4),
            "outcomes": outcomes, "margin": margin}


class Triggers:
    def __init__(self, model: str, config: TriggerConfig, state: dict[str, Any] | None = None):
        self.model = model
        self.config = config
        self.drift_streak = int((state or {}).get("drift_streak", 0))

    def state(self) -> dict[str, Any]:
        return {"drift_streak": self.drift_streak}

    def check(self, obs: Observation) -> list[Fired]:
        c, fired = self.config, []
        worst = max(obs.drift.items(), key=lambda kv: kv[1], default=None)
        self.drift_streak = self.drift_streak + 1 if worst and worst[1] > c.drift_threshold else 0
        if worst and self.drift_streak >= c.drift_checks:
            fired.append(Fired("drift", f"input drift {worst[1]:.2f} on {worst[0]} > {c.drift_threshold:g} for "
                                        f"{self.drift_streak} checks",
                               {"feature": worst[0], "rms": round(worst[1], 3), "threshold": c.drift_threshold,
                                "checks": self.drift_streak}))
        worse = accuracy_worse(self.model, obs.live, obs.outcomes, obs.held_out, c.accuracy_margin,
                               c.accuracy_min_outcomes)
        if worse:
            (name, value), = worse["live"].items()
            fired.append(Fired("accuracy", f"live {name} {value:g} worse than held-out {worse['held_out']:g} by "
                                           f"more than {c.accuracy_margin:.0%} over {obs.outcomes} outcomes",
                               worse))
        if c.schedule_seconds > 0:
            since = None if obs.last_trained is None else obs.now - obs.last_trained
            if since is None or since >= c.schedule_seconds:
                fired.append(Fired("schedule", f"{'never trained' if since is None else f'{since:.0f} s'} since "
                                               f"the last training (every {c.schedule_seconds:g} s)",
                                   {"since_seconds": since, "every_seconds": c.schedule_seconds}))
        if c.min_new_rows > 0 and obs.new_rows >= c.min_new_rows:
            fired.append(Fired("rows", f"{obs.new_rows} new rows (at least {c.min_new_rows})",
                               {"new_rows": obs.new_rows, "min_new_rows": c.min_new_rows}))
        return fired
