"""The training report: JSON with every figure, Markdown a person reads, and plots (predicted vs actual,
precision-recall curves, the selector's confusion matrix)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def write(results: list[dict[str, Any]], failures: dict[str, str], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    plots = {r["model"]: _plot(r, directory) for r in results if r.get("curves")}
    slim = [{k: v for k, v in r.items() if k != "curves"} for r in results]
    (directory / "report.json").write_text(json.dumps({"published": slim, "not_published": failures}, indent=1,
                                                      default=float) + "\n")
    lines = ["# Training report", ""]
    for r in results:
        lines += [f"## {r['model']} v{r['version']} ({r.get('seconds', '?')} s)", "", r["report"], ""]
        if plots.get(r["model"]):
            lines += [f"![{r['model']}]({plots[r['model']]})", ""]
    if failures:
        lines += ["## Not published", ""] + [f"- {m}: {why}" for m, why in failures.items()] + [""]
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
    fig, ax = plt.subplots(figsize=(6, 4))
    name = result["model"]
    if "actual" in c:
        ax.plot(c["actual"][:300], label="actual", lw=1)
        ax.plot(c["predicted"][:300], label="predicted", lw=1)
        ax.set(xlabel="held-out interval", ylabel="Mbit/s", title=f"{name}: predicted vs actual")
        ax.legend()
    elif "confusion" in c:
        m = np.array(c["confusion"])
        ax.imshow(m, cmap="Blues")
        ax.set(xticks=range(len(c["choices"])), yticks=range(len(c["choices"])), xlabel="chosen",
               ylabel="fastest (oracle)", title=f"{name}: confusion matrix")
        ax.set_xticklabels(c["choices"], rotation=45)
        ax.set_yticklabels(c["choices"])
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    else:
        precision, recall = _pr_curve(np.array(c["scores"]), np.array(c["labels"]).astype(bool))
        ax.plot(recall, precision)
        ax.set(xlabel="recall", ylabel="precision", title=f"{name}: precision-recall (held-out)", ylim=(0, 1.02))
    fig.tight_layout()
    file = f"{name}.png"
    fig.savefig(directory / file, dpi=90)
    plt.close(fig)
    return file


def _pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order])
    fp = np.cumsum(~labels[order])
    return tp / np.maximum(tp + fp, 1), tp / max(labels.sum(), 1)
