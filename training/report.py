"""The training report: JSON with every figure, Markdown a person reads, and plots (predicted vs actual beside
every baseline, precision-recall curves with the operating point, the selector's confusion matrix normalized per
true class). A model the promotion gate held back keeps its section, marked as such, with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

DPI = 150


def write(results: list[dict[str, Any]], failures: dict[str, str], directory: Path) -> Path:
    """`results` of the jobs, held-back ones included (they carry `held_back`: why); `failures` maps each
    held-back model to why, for those whose job left no result."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = {r["model"]: _plot(r, directory) for r in results if r.get("curves")}
    slim = [{k: v for k, v in r.items() if k != "curves"} for r in results]
    (directory / "report.json").write_text(json.dumps(
        {"published": [r for r in slim if "held_back" not in r], "not_published": failures,
         "held_back": [r for r in slim if "held_back" in r]}, indent=1, default=float) + "\n")
    lines = ["# Training report", ""]
    for r in results:
        if "held_back" in r:
            lines += [f"## {r['model']}: held back, not published ({r.get('seconds', '?')} s)", "",
                      f"> **Held back by the promotion gate:** {r['held_back']}", ""]
        else:
            lines += [f"## {r['model']} v{r['version']} ({r.get('seconds', '?')} s)", ""]
        lines += [r["report"], ""]
        if plots.get(r["model"]):
            lines += [f"![{r['model']}]({plots[r['model']]})", ""]
    reported = {r["model"] for r in results}
    rest = {m: why for m, why in failures.items() if m not in reported}
    if rest:
        lines += ["## Not published", ""] + [f"- {m}: {why}" for m, why in rest.items()] + [""]
    path = directory / "report.md"
    path.write_text("\n".join(lines))
    return path


def _plot(result: dict[str, Any], directory: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    c = result["curves"]
    name = result["model"]
    title = name + (" (held back)" if "held_back" in result else "")
    if "actual" in c:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        _predicted_vs_actual(ax, c, title, result.get("test", {}))
    elif "confusion" in c:
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
        _confusion(fig, ax, c, title)
    else:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        _precision_recall(ax, c, title)
    file = f"{name}.png"
    fig.savefig(directory / file, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return file


def _predicted_vs_actual(ax: Any, c: dict[str, Any], title: str, rows: dict[str, Any], points: int = 300) -> None:
    """The first held-out intervals: actual, ours and every baseline, each labelled with its held-out MAPE."""
    def label(name: str) -> str:
        mape = rows.get(name, {}).get("mape_pct")
        return name if mape is None else f"{name} (MAPE {mape:.2f}%)"

    x = np.arange(min(points, len(c["actual"])))
    ax.plot(x, c["actual"][:points], label="actual", color="black", lw=1.6)
    ours = next((k for k in rows if k.endswith("(ours)")), "ours")  # the row of whichever forecaster was trained
    ax.plot(x, c["predicted"][:points], label=label(ours), color="tab:red", lw=1.3)
    styles = {"last_value": ("tab:blue", "--"), "harmonic_mean_5": ("tab:green", ":"),
              "moving_average": ("tab:gray", "-.")}
    for base, guess in c.get("baselines", {}).items():
        color, ls = styles.get(base, ("tab:purple", "--"))
        ax.plot(x, guess[:points], label=label(base), color=color, ls=ls, lw=1)
    ax.set(xlabel="held-out interval", ylabel="Mbit/s", title=f"{title}: next-interval bandwidth")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    ax.grid(alpha=0.3)


def _confusion(fig: Any, ax: Any, c: dict[str, Any], title: str) -> None:
    """Rows are the oracle's choice, normalized to 1 (a row's cells say where that class's rows went); each cell
    shows the share and the count, in white on dark cells and black on light ones."""
    counts = np.array(c["confusion"], dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    labels = c["choices"]
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="chosen by the model",
           ylabel="fastest (oracle)", title=f"{title}: confusion (rows sum to 1)")
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels([f"{lab} (n={int(n)})" for lab, n in zip(labels, counts.sum(axis=1))])
    for (i, j), v in np.ndenumerate(share):
        ax.text(j, i, f"{v:.2f}\n{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                color=text_colour(v))


def text_colour(share: float) -> str:
    """White on the dark half of the Blues scale, black on the light half."""
    return "white" if share > 0.5 else "black"


def _precision_recall(ax: Any, c: dict[str, Any], title: str) -> None:
    scores, labels = np.array(c["scores"]), np.array(c["labels"]).astype(bool)
    precision, recall = _pr_curve(scores, labels)
    ax.plot(recall, precision, label="held-out curve")
    if "threshold" in c:
        flagged = scores >= c["threshold"]
        tp = float(np.sum(flagged & labels))
        p, r = tp / max(flagged.sum(), 1), tp / max(labels.sum(), 1)
        ax.plot([r], [p], "o", color="tab:red", ms=8, label=f"operating point (threshold {c['threshold']:.3g})")
        ax.annotate(f"recall {r:.3f}\nprecision {p:.3f}", (r, p), textcoords="offset points", xytext=(-90, -35),
                    fontsize=8, arrowprops={"arrowstyle": "->"})
    ax.set(xlabel="recall", ylabel="precision", title=f"{title}: precision-recall (held-out)", ylim=(0, 1.02),
           xlim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)


def _pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) at every distinct threshold, highest first: rows with tied scores (trees give many)
    are flagged together, so the curve passes through the operating point."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order])
    fp = np.cumsum(~labels[order])
    ordered = scores[order]
    last_of_tie = np.append(ordered[1:] != ordered[:-1], True)
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    return tp / np.maximum(tp + fp, 1), tp / max(labels.sum(), 1)
