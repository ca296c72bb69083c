"""Does the challenger beat the champion on live outcomes? The tests, on the shadow's paired statistics
(services/shadow.py; admin GetShadowStats):

- the forecaster: a one-sided paired t-test on d = challenger's - champion's absolute percentage error per
  outcome. Promote when the mean of d is below -margin (percentage points of MAPE) with confidence 1 - alpha:
  t = (mean + margin) / (sd / sqrt(n)), p = P(T_{n-1} <= t). Reject early when the challenger is worse with the
  same confidence (mean > 0). The outcomes of one call are paired, so the test needs no assumption on how hard
  the traffic was; per-outcome errors are heavy-tailed, but by n of some tens the mean's t approximation holds
  (and the margin guards against promoting on noise).
- the classifiers: McNemar's exact test on the discordant outcomes (b: only the champion right, c: only the
  challenger right): promote when P(Binomial(b + c, 1/2) >= c) < alpha and (c - b) / n >= margin; reject early
  when the same holds the other way round.

Undecided after `max_outcomes` paired outcomes: rejected (no evidence it is better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EvidenceConfig:
    min_outcomes: int = 30      # paired outcomes before any decision
    max_outcomes: int = 2000    # undecided by then: rejected
    margin: float = 1.0         # forecaster: percentage points of MAPE; classifiers: share of outcomes
    alpha: float = 0.05         # 1 - confidence


@dataclass
class Verdict:
    decision: str               # "promote", "reject" or "wait"
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def judge(model: str, stats: dict[str, Any], config: EvidenceConfig) -> Verdict:
    n = int(stats.get("outcomes", 0))
    if n < config.min_outcomes:
        return Verdict("wait", f"{n} paired outcomes of {config.min_outcomes} needed", {"outcomes": n})
    verdict = (_paired_t if model == "bandwidth_predictor" else _mcnemar)(stats, config)
    if verdict.decision == "wait" and n >= config.max_outcomes:
        return Verdict("reject", f"no evidence it is better after {n} paired outcomes ({verdict.reason})",
                       verdict.figures)
    return verdict


def _paired_t(stats: dict[str, Any], c: EvidenceConfig) -> Verdict:
    from scipy import stats as st

    n, mean, var = int(stats["outcomes"]), float(stats["mean_difference"]), float(stats["variance_difference"])
    se = math.sqrt(var / n) if var > 0 else 0.0
    figures = {"test": "paired t (one-sided)", "outcomes": n, "mean_difference_pp": round(mean, 3),
               "sd_pp": round(math.sqrt(var), 3), "margin_pp": c.margin, "alpha": c.alpha}
    if se == 0.0:  # identical errors on every outcome (or one value): the means decide exactly
        better, worse = (1.0 if mean >= -c.margin else 0.0), (0.0 if mean > 0 else 1.0)
    else:
        better = float(st.t.cdf((mean + c.margin) / se, n - 1))  # H1: mean < -margin
        worse = float(st.t.sf(mean / se, n - 1))  # H1: mean > 0
    figures.update(p_better=_round(better), p_worse=_round(worse))
    if better < c.alpha:
        return Verdict("promote", f"challenger's error lower by {-mean:.2f} pp (> {c.margin:g} pp), "
                                  f"p = {better:.2g} < {c.alpha:g} over {n} paired outcomes", figures)
    if worse < c.alpha:
        return Verdict("reject", f"challenger's error higher by {mean:.2f} pp, p = {worse:.2g} < {c.alpha:g} "
                                 f"over {n} paired outcomes", figures)
    return Verdict("wait", f"mean difference {mean:+.2f} pp, p = {better:.2g} (better by {c.margin:g} pp), "
                           f"{worse:.2g} (worse)", figures)


def _mcnemar(stats: dict[str, Any], c: EvidenceConfig) -> Verdict:
    from scipy.stats import binomtest

    n = int(stats["outcomes"])
    b, cc = int(stats.get("only_champion_right", 0)), int(stats.get("only_candidate_right", 0))
    figures = {"test": "McNemar exact (one-sided)", "outcomes": n, "only_champion_right": b,
               "only_challenger_right": cc, "margin": c.margin, "alpha": c.alpha}
    if b + cc == 0:
        return Verdict("wait", "no discordant outcomes yet", figures)
    better = binomtest(cc, b + cc, 0.5, alternative="greater").pvalue
    worse = binomtest(b, b + cc, 0.5, alternative="greater").pvalue
    gain = (cc - b) / n
    figures.update(p_better=_round(better), p_worse=_round(worse), gain=round(gain, 4))
    if better < c.alpha and gain >= c.margin:
        return Verdict("promote", f"challenger right on {cc} outcomes the champion missed, wrong on {b} it got "
                                  f"(gain {gain:.1%} >= {c.margin:.1%}), p = {better:.2g} < {c.alpha:g}", figures)
    if worse < c.alpha:
        return Verdict("reject", f"challenger wrong on {b} outcomes the champion got, right on only {cc} it "
                                 f"missed, p = {worse:.2g} < {c.alpha:g}", figures)
    return Verdict("wait", f"discordant {b} vs {cc}, p = {better:.2g}", figures)


def _round(p: float) -> float:
    return float(f"{p:.3g}")
