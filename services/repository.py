"""The model repository on disk: `<root>/<model>/<version>/{model.onnx,metadata.json}`.

Every version is loaded and verified (runtime.ModelRuntime.load); one that fails is refused with its reason
and never serves. The policy serves the highest valid version of each model, unless a request names one.
Directories whose names start with a dot (staging areas of a publish in progress) are ignored.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from dwcp_inference import MODEL_KINDS

from .errors import ModelNotFound, ModelNotReady, VersionRefused
from .runtime import ModelRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    model: str
    version: str
    reason: str


class Repository:
    def __init__(self, root: Path, threads_per_session: int = 1):
        self.root = Path(root)
        self.threads = threads_per_session
        self._lock = threading.Lock()
        self._versions: dict[str, dict[str, ModelRuntime]] = {}
        self.refused: list[Refusal] = []

    def load_all(self) -> None:
        """Scan the repository and load every valid version. Swaps the whole set in at once."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} does not exist")
        versions: dict[str, dict[str, ModelRuntime]] = {}
        refused: list[Refusal] = []
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if model_dir.name not in MODEL_KINDS:
                log.warning("ignoring %s: not a known model (expected one of %s)", model_dir, list(MODEL_KINDS))
                continue
            for vdir in sorted((p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                               key=_version_key):
                try:
                    rt = ModelRuntime.load(vdir, self.threads)
                except VersionRefused as e:
                    refused.append(Refusal(model_dir.name, vdir.name, str(e)))
                    log.error("refused %s version %s: %s", model_dir.name, vdir.name, e)
                    continue
                versions.setdefault(model_dir.name, {})[vdir.name] = rt
                log.info("loaded %s version %s", model_dir.name, vdir.name)
        with self._lock:
            self._versions, self.refused = versions, refused

    def get(self, model: str, version: str = "") -> ModelRuntime:
        with self._lock:
            versions = self._versions.get(model)
        if model not in MODEL_KINDS:
            raise ModelNotFound(f"model: unknown model {model!r}, expected one of {list(MODEL_KINDS)}")
        if not versions:
            raise ModelNotReady(f"model {model}: no valid version is loaded")
        if version:
            if version not in versions:
                raise ModelNotFound(f"model.version: {model} has no loaded version {version!r}, "
                                    f"loaded: {sorted(versions, key=_version_key)}")
            return versions[version]
        return versions[max(versions, key=_version_key)]

    def loaded(self) -> dict[str, dict[str, ModelRuntime]]:
        """Every loaded version, by model."""
        with self._lock:
            return {m: dict(v) for m, v in self._versions.items()}

    def serving(self) -> dict[str, ModelRuntime]:
        """The version each model serves by default."""
        with self._lock:
            names = [m for m, v in self._versions.items() if v]
        return {m: self.get(m) for m in names}


def _version_key(p: Path | str) -> tuple[int, str]:
    name = p.name if isinstance(p, Path) else p
    return (int(name), "") if name.isdigit() else (-1, name)
