"""Compression selector: an MLP over link state and cheap payload traits picks the codec and level with the
least effective transfer time. Labels come from the oracle in data/payloads.py (real compression ratios).
Evaluated on payloads it never saw against always-none, always-zstd-3 and DWCP's link-type heuristic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dwcp_inference.contracts import COMPRESSION
from dwcp_inference.features import PayloadTraits, fit_scaling, transform
from dwcp_inference.metadata import ModelMetadata

from .common import gate, provenance, seed_everything, take
from .data.payloads import (CODECS, chunk_ratios, goodput_mbps, measure_files, random_links, synthetic_chunks,
                            transfer_seconds)
from .evaluation import table

NAME = COMPRESSION.name
SAMPLE_BYTES = 4096  # the payload sample callers are asked to send (docs/api.md)
RAW_FIELDS = COMPRESSION.raw_fields()  # the contract's (dwcp_inference/contracts/)
FEATURES = list(COMPRESSION.features)
CHOICES = [{"codec": c.name, "level": c.level} for c in CODECS]  # the contract's CODEC_CHOICES, with their speeds
HEURISTIC = {"dc": "none", "metro": "lz4", "wan": "zstd-3", "edge": "zstd-9"}  # DWCP's rule of thumb


def choice_name(c: dict[str, Any]) -> str:
    return c["codec"] if c["codec"] in ("none", "lz4") else f"{c['codec']}-{c['level']}"


def generate(rows: int = 20000, chunks: int = 160, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of (link, payload) with the payload's traits, the time of every choice and the label."""
    rng = np.random.default_rng(seed)
    pool = synthetic_chunks(chunks, seed)
    ratios = chunk_ratios(pool)
    traits = [PayloadTraits.from_sample(len(c), c[:SAMPLE_BYTES]) for c in pool]
    cols = random_links(rows, rng)
    chunk = rng.integers(0, len(pool), rows)
    cols["chunk"] = chunk
    cols["size_bytes"] = np.exp(rng.uniform(np.log(1024), np.log(16 << 20), rows)).round()
    cols["payload_entropy"] = np.array([traits[i].entropy for i in chunk])
    cols["payload_ratio"] = np.array([traits[i].ratio for i in chunk])
    seconds = transfer_seconds(cols["size_bytes"], ratios[chunk],
                               goodput_mbps(cols["throughput_mbps"], cols["rtt_ms"], cols["packet_loss"]))
    cols["seconds"] = seconds
    cols["best_choice"] = seconds.argmin(axis=1)
    return cols


def corpus_rows(files: list[tuple[str, bytes]], links_per_chunk: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows from a real payload corpus: each chunk really compressed and timed (CPU time, measured once per file
    and cached: payloads.measure_files), sent over random links. The first 70% of each file trains, the next 15%
    validates, the last 15% tests."""
    rng = np.random.default_rng(seed)
    chunks, names, position, ratios, comp, decomp = measure_files(files)
    traits = [PayloadTraits.from_sample(len(c), c[:SAMPLE_BYTES]) for c in chunks]
    idx = np.repeat(np.arange(len(chunks)), links_per_chunk)
    cols = random_links(len(idx), rng)
    size = np.array([len(chunks[i]) for i in idx], dtype=float)
    goodput = goodput_mbps(cols["throughput_mbps"], cols["rtt_ms"], cols["packet_loss"])
    cols["seconds"] = comp[idx] + size[:, None] * ratios[idx] * 8 / (goodput[:, None] * 1e6) + decomp[idx]
    cols.update(size_bytes=size, chunk=idx, file=np.array(names)[idx],
                payload_entropy=np.array([traits[i].entropy for i in idx]),
                payload_ratio=np.array([traits[i].ratio for i in idx]),
                split=np.select([position[idx] < 0.7, position[idx] < 0.85], [0, 1], 2))
    cols["best_choice"] = cols["seconds"].argmin(axis=1)
    return cols


def with_costs(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns with `seconds` [N, choices], `best_choice` as an index and `chunk` (the payload group). A CSV
    gives per-choice times as seconds_<choice> columns, or only the best choice (then every other choice is
    charged twice the best's time)."""
    cols = dict(columns)
    names = [choice_name(c) for c in CHOICES]
    n = len(cols["size_bytes"])
    if "seconds" not in cols:
        if all(f"seconds_{k}" in cols for k in names):
            cols["seconds"] = np.stack([np.asarray(cols[f"seconds_{k}"], float) for k in names], axis=1)
        else:
            unknown = sorted(set(cols["best_choice"]) - set(names))
            if unknown:
                raise ValueError(f"best_choice: unknown choices {unknown}, expected one of {names}")
            best = np.array([names.index(b) for b in cols["best_choice"]])
            cols["seconds"] = np.where(np.arange(len(names)) == best[:, None], 1.0, 2.0)
    cols["best_choice"] = np.asarray(cols["seconds"]).argmin(axis=1)
    if "chunk" not in cols:
        cols["chunk"] = np.arange(n) // 50
    return cols


def split_by_payload(chunk: np.ndarray, seed: int) -> np.ndarray:
    """0 train, 1 validation, 2 test per row, by payload chunk: the test set holds payloads never seen."""
    groups = np.unique(chunk)
    np.random.default_rng(seed).shuffle(groups)
    n = len(groups)
    return np.select([np.isin(chunk, groups[: int(n * 0.7)]), np.isin(chunk, groups[int(n * 0.7): int(n * 0.85)])],
                     [0, 1], 2)


def regret(seconds: np.ndarray, picked: np.ndarray) -> dict[str, float]:
    """How much effective throughput a policy loses against the oracle: 1 - best_time / picked_time."""
    best = seconds.min(axis=1)
    chosen = seconds[np.arange(len(picked)), picked]
    loss = 1 - best / chosen
    return {"accuracy": float(np.mean(chosen <= best)), "throughput_regret_pct": float(np.mean(loss) * 100),
            "p95_regret_pct": float(np.percentile(loss, 95) * 100)}


def train(columns: dict[str, np.ndarray], out: Path | None, *, source: str, seed: int = 0, epochs: int = 40,
          hidden: int = 64, lr: float = 3e-3, force: bool = False, quiet: bool = False,
          checkpoint_dir: Path | None = None) -> dict[str, Any]:
    import torch

    from dwcp_inference.export import onnx_export, publish

    from .loop import fit, predict
    from .models import CompressionMLP, Probabilities

    seed_everything(seed)
    columns = with_costs(columns)
    split = columns["split"] if "split" in columns else split_by_payload(columns["chunk"], seed)
    features = fit_scaling(FEATURES, take(columns, split == 0))
    x = torch.from_numpy(transform(features, columns))
    y = torch.from_numpy(columns["best_choice"].astype(np.int64))
    parts = [torch.from_numpy(np.flatnonzero(split == i)) for i in range(3)]
    # The loss is the expected share of throughput lost against the oracle under the model's probabilities
    # (what we are judged on), plus a little cross-entropy to keep the probabilities calibrated.
    cost = torch.from_numpy((1 - columns["seconds"].min(axis=1, keepdims=True) / columns["seconds"])
                            .astype(np.float32))
    model = CompressionMLP(x.shape[1], len(CHOICES), hidden)
    ce = torch.nn.CrossEntropyLoss()

    def loss(m: torch.nn.Module, b: tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits = m(b[0])
        return (torch.softmax(logits, -1) * b[2]).sum(-1).mean() + 0.1 * ce(logits, b[1])

    summary = fit(model, loss, (x[parts[0]], y[parts[0]], cost[parts[0]]),
                  (x[parts[1]], y[parts[1]], cost[parts[1]]), epochs=epochs, lr=lr, seed=seed, name=NAME,
                  checkpoint=Path(checkpoint_dir) / f"{NAME}.pt" if checkpoint_dir else None)
    probs = Probabilities(model).eval()

    test = parts[2].numpy()
    picked = predict(probs, x[parts[2]]).numpy().argmax(1)
    rows = regret_table(columns, test, picked)
    confusion = np.zeros((len(CHOICES), len(CHOICES)), dtype=int)
    np.add.at(confusion, (columns["best_choice"][test], picked), 1)
    report = table(f"{NAME}: held-out ({len(test)} rows, payloads not trained on)", rows,
                   ["accuracy", "throughput_regret_pct", "p95_regret_pct"])
    if not quiet:
        print(report, flush=True)
    if out is None:  # tuning: judged on validation data only
        val = parts[1].numpy()
        val_regret = regret(columns["seconds"][val], predict(probs, x[parts[1]]).numpy().argmax(1))
        return {"model": NAME, "objective": val_regret["throughput_regret_pct"], "test": rows, "report": report}
    best_baseline = min(v["throughput_regret_pct"] for k, v in rows.items() if k != "mlp (ours)")
    meta = ModelMetadata(
        name=NAME, version="", framework={"name": "torch", "version": torch.__version__}, opset=onnx_export.OPSET,
        inputs=[], outputs=[], raw_fields=RAW_FIELDS, features=features, window=0, targets=[],
        decision={"choices": CHOICES, "sample_bytes": SAMPLE_BYTES,
                  "rule": "the choice with the highest probability of being fastest"},
        metrics={"test": rows, "baselines_beaten": rows["mlp (ours)"]["throughput_regret_pct"] < best_baseline,
                 "training": summary, "report": report},
        training=provenance(columns, source, seed, len(y)), tolerance=1e-5)
    held_out = x[parts[2]][:512]
    onnx_bytes = onnx_export.from_torch(probs, held_out[:2], "features", ["probabilities"])
    reference = {"probabilities": predict(probs, held_out).numpy()}
    ours = rows["mlp (ours)"]["throughput_regret_pct"]
    failures = [] if ours < best_baseline else [f"regret {ours:.2f}% does not beat the best baseline's "
                                                f"{best_baseline:.2f}%"]
    result = {"model": NAME, "test": rows, "report": report,
              "curves": {"confusion": confusion.tolist(), "choices": [choice_name(c) for c in CHOICES]}}
    meta.metrics["gate"] = gate(NAME, failures, force, result)
    version_dir = publish.publish(out, meta, onnx_bytes, held_out.numpy(), reference)
    return {**result, "version": meta.version, "path": str(version_dir)}


def regret_table(columns: dict[str, np.ndarray], rows: np.ndarray, picked: np.ndarray) -> dict[str, dict[str, float]]:
    """The model's picks on `rows` beside always-none, always-zstd-3 and DWCP's heuristic, against the oracle."""
    seconds = columns["seconds"][rows]
    names = [choice_name(c) for c in CHOICES]
    return {"mlp (ours)": regret(seconds, picked),
            "always none": regret(seconds, np.zeros(len(rows), int)),
            "always zstd-3": regret(seconds, np.full(len(rows), names.index("zstd-3"))),
            "dwcp heuristic": regret(seconds, np.array([names.index(HEURISTIC[t]) for t in columns["link_type"][rows]]))}
