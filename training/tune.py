"""`dwcp-inference tune`: hyperparameter search with Optuna, judged on validation data only (never test).

The study lives in an Optuna storage (a URL: sqlite:///tune.db, or postgresql://... so that several machines can
work on one study: run the same command on each). The best parameters are printed, and `--publish` retrains with
them and publishes the result (through the promotion gate)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import jobs
from .data.csv_schema import DataError
from .progress import Eta, log, seconds


def space(model: str, trial: Any) -> dict[str, Any]:
    """The parameters tried for each model."""
    if model == "reliability":
        return {"trees": trial.suggest_int("trees", 30, 300, log=True), "max_depth": trial.suggest_int("max_depth", 2, 5)}
    return {"hidden": trial.suggest_categorical("hidden", [16, 32, 64, 128]),
            "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True)}


def tune(model: str, *, trials: int, storage: str, study: str = "", data: Path | None = None, fmt: str = "csv",
         interval_ms: int = 1000, seed: int = 0, size: str = "full") -> dict[str, Any]:
    import optuna

    if fmt in jobs.SERIES_FORMATS:
        raise DataError("tune: the detectors' series jobs (--format nab, labelled) have no validation split to judge "
                        "trials on (a few labelled windows, all needed for training or the held-out files); tune on "
                        "csv or generated data")
    source = f"{fmt}:{Path(data).name}" if data is not None else f"generator:{model}:{size}"
    started = time.monotonic()
    log(f"[tune {model}] preparing data from {source}")
    if data is not None:
        columns, extra = jobs.load(model, data, fmt, interval_ms)
    else:
        columns, extra = jobs.generate(model, seed, size), {}
    log(f"[tune {model}] data ready in {seconds(time.monotonic() - started)}; {trials} trials")
    base = {**jobs.SIZES[size][model][1], **extra}
    job = jobs.JOBS[model]

    def objective(trial: optuna.Trial) -> float:
        params = {**base, **space(model, trial)}
        result = job(columns, None, source=source, seed=seed, quiet=True, **params)
        return float(result["objective"])

    name = study or f"dwcp-{model}"
    s = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="minimize",
                            sampler=optuna.samplers.TPESampler(seed=seed))
    eta = Eta(trials)

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        took, left = eta.step()
        value = "failed" if trial.value is None else f"{trial.value:.5g}"
        log(f"[tune {model}] trial {eta.done}/{trials}  objective {value}  best {study.best_value:.5g}  "
            f"{seconds(took)}/trial  eta {seconds(left)}")

    s.optimize(objective, n_trials=trials, callbacks=[progress])
    print(f"[tune {model}] study {name}: {len(s.trials)} trials, best validation objective {s.best_value:.5g} "
          f"with {s.best_params}", flush=True)
    return {"study": name, "best_value": s.best_value, "best_params": s.best_params, "params": {**base, **s.best_params},
            "trials": len(s.trials)}
