"""Which versions of a model are loaded and which one answers: `<repo>/<model>/policy.json`.

    {"keep_latest": 2, "pinned": ["3"], "disabled": ["5"], "labels": {"stable": "3", "canary": "4"},
     "split": {"stable": 90, "canary": 10}, "history": {"stable": ["2"]}}

Loaded: the `keep_latest` highest valid versions, the pinned and the labelled ones, never the disabled.
Answering a request with no version or label: the weighted `split` between labels if set, else `stable` if it
names a loaded version, else the highest loaded version. The file is written by the admin API (atomically) and
may be edited by hand; a missing file means the defaults.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

POLICY_FILE = "policy.json"


class PolicyError(ValueError):
    """policy.json cannot be read or a change to it is invalid."""


@dataclass
class Policy:
    keep_latest: int = 2
    pinned: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)  # earlier versions of each label, newest last

    @classmethod
    def read(cls, model_dir: Path) -> "Policy":
        path = Path(model_dir) / POLICY_FILE
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            p = cls(**data)
        except (OSError, ValueError, TypeError) as e:
            raise PolicyError(f"{path}: {e}") from e
        if p.keep_latest < 1:
            raise PolicyError(f"{path}: keep_latest must be >= 1, got {p.keep_latest}")
        return p

    def write(self, model_dir: Path) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".policy-", dir=model_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, Path(model_dir) / POLICY_FILE)

    def wanted(self, on_disk: list[str]) -> list[str]:
        """The versions to load, of those on disk (sorted oldest first)."""
        keep = set(on_disk[-self.keep_latest:]) | set(self.pinned) | set(self.labels.values())
        return [v for v in on_disk if v in keep and v not in self.disabled]

    def promote(self, label: str, version: str) -> None:
        previous = self.labels.get(label)
        if previous == version:
            return
        if previous is not None:
            self.history.setdefault(label, []).append(previous)
        self.labels[label] = version

    def rollback(self, label: str) -> str:
        """Point `label` back at its previous version; returns it."""
        earlier = self.history.get(label)
        if not earlier:
            raise PolicyError(f"label {label!r} has no earlier version to roll back to")
        self.labels[label] = earlier.pop()
        return self.labels[label]
