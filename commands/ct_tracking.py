"""Every training run of continuous training, tracked with MLflow (offline: a SQLite store and an artifact folder
under the controller's state directory by default, or any tracking URI): parameters (the recipe, the trigger),
metrics (the held-out figures), the data fingerprint, artifacts (the report, metadata.json, the training log).
The run id goes into the version's metadata (`training.provenance`), so any served version leads back to its run.
MLflow comes with the train extra (mlflow-skinny, with SQLAlchemy and Alembic for the SQLite store)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

EXPERIMENT = "dwcp-inference-continuous"


def default_uri(state_dir: Path) -> str:
    return f"sqlite:///{Path(state_dir).resolve() / 'mlflow.db'}"


def _flat(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        out[prefix] = float(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)


def held_out_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The metadata's held-out table as MLflow metric names (`test.<row>.<figure>`, characters MLflow takes)."""
    out: dict[str, float] = {}
    _flat("test", metrics.get("test", {}), out)
    clean = {}
    for k, v in out.items():
        name = "".join(ch if ch.isalnum() or ch in "._-/ " else "_" for ch in k)
        clean[name] = v
    return clean


class Tracker:
    def __init__(self, uri: str, artifacts: Path, experiment: str = EXPERIMENT):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=Path(artifacts).resolve().as_uri())

    def start(self, model: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=f"{model}-{tags.get('trigger', 'run')}",
                                     tags={"model": model, **tags})
        for k, v in params.items():
            self.client.log_param(run.info.run_id, k, str(v)[:500])
        return run.info.run_id

    def finish(self, run_id: str, metrics: dict[str, float], artifacts: list[Path], status: str,
               tags: dict[str, str] | None = None) -> None:
        for k, v in metrics.items():
            self.client.log_metric(run_id, k, v)
        for k, v in (tags or {}).items():
            self.client.set_tag(run_id, k, v)
        for path in artifacts:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.exists():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status=status)
