"""`dwcp-inference train`: the data for each model (generated or from a CSV) and its job, with sizes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import bandwidth, compression, consensus, nab, reliability
from .common import GateError
from .data import generators, real
from .data.csv_schema import DataError, load_csv
from .progress import log, seconds

MODELS = ("bandwidth", "compression", "reliability", "consensus")
NAMES = {"bandwidth": bandwidth.NAME, "compression": compression.NAME, "reliability": reliability.NAME,
         "consensus": consensus.NAME}

# (generator arguments, training arguments) at full size and at the quick size used by tests and CI.
SIZES: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {
    "full": {
        "bandwidth": ({"links": 8, "days": 21}, {"epochs": 30, "hidden": 64}),
        "compression": ({"rows": 30000, "chunks": 200}, {"epochs": 60, "hidden": 64}),
        "reliability": ({"nodes": 40, "steps": 600}, {"trees": 100}),
        "consensus": ({"windows": 4000}, {"epochs": 60, "hidden": 32}),
    },
    "quick": {
        "bandwidth": ({"links": 3, "days": 5}, {"epochs": 4, "hidden": 16}),
        "compression": ({"rows": 4000, "chunks": 60}, {"epochs": 15, "hidden": 32}),
        "reliability": ({"nodes": 20, "steps": 400}, {"trees": 30}),
        "consensus": ({"windows": 2000}, {"epochs": 25, "hidden": 32}),
    },
}


JOBS = {"bandwidth": bandwidth.train, "compression": compression.train, "reliability": reliability.train,
        "consensus": consensus.train}


def generate(model: str, seed: int, size: str) -> dict[str, np.ndarray]:
    kwargs = SIZES[size][model][0]
    make: Callable[..., dict[str, np.ndarray]] = {
        "bandwidth": generators.network_samples, "compression": compression.generate,
        "reliability": generators.node_metrics, "consensus": generators.consensus_windows}[model]
    return make(seed=seed, **kwargs)


FORMATS = {"bandwidth": ("csv", "mahimahi"), "compression": ("csv", "payloads"),
           "reliability": ("csv", "nab", "labelled"), "consensus": ("csv", "nab", "labelled")}
SERIES_FORMATS = ("nab", "labelled")  # a metric series judged against its own history: training/nab.py


def load(model: str, data: Path, fmt: str = "csv", interval_ms: int = 1000) -> tuple[Any, dict[str, Any]]:
    """Columns of `data` in `model`'s schema (for NAB: its series), and the job arguments the format implies."""
    if fmt not in FORMATS[model]:
        raise DataError(f"--format {fmt}: {model} reads {list(FORMATS[model])}")
    if fmt == "mahimahi":
        return real.mahimahi_columns(data, interval_ms), {"timed": False}
    if fmt == "payloads":
        return compression.corpus_rows(real.payload_files(data)), {}
    if fmt == "nab":
        return real.nab_series(data), {}
    if fmt == "labelled":
        return real.labelled_series(data), {}
    columns = load_csv(data, NAMES[model])
    if model == "consensus":
        columns = consensus.rows_to_windows(columns)
    return columns, {}


def run(model: str, out: Path, *, data: Path | None = None, fmt: str = "csv", interval_ms: int = 1000,
        seed: int = 0, size: str = "full", force: bool = False, params: dict[str, Any] | None = None,
        checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """Train one model on `data` (in `fmt`) or on generated data, export and publish it."""
    started = time.monotonic()
    extra: dict[str, Any] = {}
    source = f"{fmt}:{Path(data).name}" if data is not None else f"generator:{model}:{size}"
    log(f"[{NAMES[model]}] preparing data from {source}")
    if data is not None:
        columns, extra = load(model, data, fmt, interval_ms)
    else:
        columns = generate(model, seed, size)
    log(f"[{NAMES[model]}] data ready in {seconds(time.monotonic() - started)}; training")
    if checkpoint_dir is not None and model != "reliability":  # the best weights so far, saved each epoch
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        extra["checkpoint_dir"] = checkpoint_dir
    # quiet: the caller prints each held-out table once, after every job has finished.
    try:
        if fmt in SERIES_FORMATS:  # its own jobs: a series judged against its own history (training/nab.py)
            sizes = {"epochs": 6} if size == "quick" and model == "consensus" else {}
            result = nab.JOBS[model](columns, Path(out), source=source, seed=seed, force=force, quiet=True,
                                     **{**sizes, **extra, **(params or {})})
        else:
            result = JOBS[model](columns, Path(out), source=source, seed=seed, force=force, quiet=True,
                                 **{**SIZES[size][model][1], **extra, **(params or {})})
    except GateError as e:
        if e.result is not None:
            e.result["seconds"] = round(time.monotonic() - started, 1)
        log(f"[{NAMES[model]}] held back after {seconds(time.monotonic() - started)}: {e}")
        raise
    result["seconds"] = round(time.monotonic() - started, 1)
    log(f"[{NAMES[model]}] published version {result['version']} at {result['path']} "
        f"in {seconds(result['seconds'])}")
    return result


def _worker(model: str, kwargs: dict[str, Any], threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    try:
        return run(model, **kwargs)
    except GateError as e:
        return {"model": NAMES[model], "gate_failed": str(e), "result": e.result}


def run_all(models: tuple[str, ...], out: Path, *, workers: int = 1, **kwargs: Any) -> tuple[list[dict], dict]:
    """Train several models, `workers` at a time in separate processes. Returns (the results of every job, the
    held-back ones too, marked `held_back` with why; {model the promotion gate held back: why})."""
    import concurrent.futures as cf
    import multiprocessing
    import os

    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    results, held = [], {}
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, m, {"out": out, **kwargs}, threads) for m in models]
        for f in futures:
            r = f.result()
            if "gate_failed" in r:
                held[r["model"]] = r["gate_failed"]
                if r["result"] is not None:
                    results.append(r["result"])
            else:
                results.append(r)
    return results, held
