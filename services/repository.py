"""The model repository on disk: `<root>/<model>/<version>/{model.onnx,metadata.json}` and, optionally,
`<root>/<model>/policy.json` (policy.py).

`reload` rescans: it loads and verifies the versions the policy wants (runtime.ModelRuntime.load), keeps
versions already loaded as they are, and swaps the new set in at once. A version that fails verification is
refused with its reason and never serves; a request that started on a version finishes on it, since it holds
the version's runtime, which is released only when the last such request drops it. Directories whose names
start with a dot (staging areas of a publish in progress) are ignored.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dwcp_inference import MODEL_KINDS, metadata

from .batching import BatchPolicy, MicroBatcher
from .errors import InvalidInput, ModelNotFound, ModelNotReady, VersionRefused
from .policy import Policy, PolicyError
from .runtime import ModelRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    model: str
    version: str
    reason: str


def _fingerprint(vdir: Path) -> tuple:
    """Changes whenever a version's files change (or appear)."""
    out = []
    for name in (metadata.METADATA_FILE, metadata.MODEL_FILE):
        try:
            st = (vdir / name).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


@dataclass
class _Model:
    policy: Policy
    versions: dict[str, ModelRuntime]
    fingerprints: dict[str, tuple]


# Called with (model, version, event) for every "loaded", "refused" and "unloaded".
Listener = Callable[[str, str, str], None]


class Repository:
    def __init__(self, root: Path, threads_per_session: int = 1, listener: Listener | None = None,
                 batching: BatchPolicy | None = None):
        self.root = Path(root)
        self.threads = threads_per_session
        self.batching = batching
        self.listener = listener or (lambda model, version, event: None)
        self._lock = threading.Lock()     # guards the swap of _models
        self._reload_lock = threading.Lock()  # one reload at a time
        self._models: dict[str, _Model] = {}
        self._refused: dict[tuple[str, str], tuple[tuple, str]] = {}  # (model, version) -> (fingerprint, reason)

    @property
    def refused(self) -> list[Refusal]:
        return [Refusal(m, v, reason) for (m, v), (_, reason) in sorted(self._refused.items())]

    def load_all(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} does not exist")
        self.reload()

    def reload(self) -> bool:
        """Rescan the repository; returns whether anything changed. When the repository cannot be read (gone,
        unmounted, permissions), raises OSError and changes nothing: what is loaded keeps serving."""
        with self._reload_lock:
            current = self._models
            models: dict[str, _Model] = {}
            changed = False
            model_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
            for model_dir in model_dirs:
                if model_dir.name not in MODEL_KINDS:
                    continue
                entry, entry_changed = self._scan(model_dir, current.get(model_dir.name))
                models[model_dir.name] = entry
                changed |= entry_changed
            for name in set(current) - set(models):
                for version in current[name].versions:
                    self.listener(name, version, "unloaded")
                changed = True
            with self._lock:
                self._models = models
            return changed

    def _scan(self, model_dir: Path, old: _Model | None) -> tuple[_Model, bool]:
        name = model_dir.name
        try:
            policy = Policy.read(model_dir)
        except PolicyError as e:
            log.error("%s: keeping the previous policy: %s", name, e)
            policy = old.policy if old else Policy()
        on_disk = sorted((p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=int)
        extra = set(policy.pinned) | set(policy.labels.values())
        versions: dict[str, ModelRuntime] = {}
        fingerprints: dict[str, tuple] = {}
        latest = 0
        for version in reversed(on_disk):  # newest first: keep_latest counts valid versions only
            in_latest = latest < policy.keep_latest
            if version in policy.disabled or not (in_latest or version in extra):
                continue
            vdir = model_dir / version
            fp = _fingerprint(vdir)
            if old and version in old.versions and old.fingerprints.get(version) == fp:
                rt: ModelRuntime | None = old.versions[version]
            else:
                rt = self._load(name, vdir, fp)
                if rt is None and old and version in old.versions:
                    # Its files changed in place and no longer verify: the copy already loaded keeps serving.
                    rt, fp = old.versions[version], old.fingerprints[version]
            if rt is None:
                continue
            versions[version], fingerprints[version] = rt, fp
            latest += in_latest
        for version in set(old.versions if old else ()) - set(versions):
            log.info("unloaded %s version %s", name, version)
            self.listener(name, version, "unloaded")
        changed = old is None or policy != old.policy or versions.keys() != old.versions.keys() or any(
            rt is not old.versions[v] for v, rt in versions.items())
        for key in [k for k in self._refused if k[0] == name and k[1] not in on_disk]:
            del self._refused[key]
        return _Model(policy, versions, fingerprints), changed

    def _load(self, name: str, vdir: Path, fp: tuple) -> ModelRuntime | None:
        """Load and verify a version, or None when it is refused (now, or before with the same files)."""
        refused = self._refused.get((name, vdir.name))
        if refused and refused[0] == fp:
            return None
        try:
            rt = ModelRuntime.load(vdir, self.threads)
        except VersionRefused as e:
            self._refused[(name, vdir.name)] = (fp, str(e))
            log.error("refused %s version %s: %s", name, vdir.name, e)
            self.listener(name, vdir.name, "refused")
            return None
        self._refused.pop((name, vdir.name), None)
        if self.batching and self.batching.max_rows > 1:
            rt.batcher = MicroBatcher(name, rt._infer, self.batching)
        log.info("loaded %s version %s", name, vdir.name)
        self.listener(name, vdir.name, "loaded")
        return rt

    # ------------------------------------------------------------------ answering

    def get(self, model: str, version: str = "", label: str = "") -> ModelRuntime:
        """The version that answers: the one named, the one a label names, or the policy's choice."""
        if model not in MODEL_KINDS:
            raise ModelNotFound(f"model: unknown model {model!r}, expected one of {list(MODEL_KINDS)}")
        with self._lock:
            entry = self._models.get(model)
        if entry is None or not entry.versions:
            raise ModelNotReady(f"model {model}: no valid version is loaded")
        versions, policy = entry.versions, entry.policy
        if version:
            if version not in versions:
                raise ModelNotFound(f"model.version: {model} has no loaded version {version!r}, "
                                    f"loaded: {sorted(versions, key=int)}")
            return versions[version]
        if label and label != "latest":
            target = policy.labels.get(label)
            if target is None or target not in versions:
                raise ModelNotFound(f"model.label: {model} has no label {label!r} on a loaded version "
                                    f"(labels: {policy.labels})")
            return versions[target]
        if not label and policy.split:
            labels = [lb for lb in policy.split if policy.labels.get(lb) in versions]
            if labels:
                chosen = random.choices(labels, weights=[policy.split[lb] for lb in labels])[0]
                return versions[policy.labels[chosen]]
        if not label and policy.labels.get("stable") in versions:
            return versions[policy.labels["stable"]]
        return versions[max(versions, key=int)]

    def loaded(self) -> dict[str, dict[str, ModelRuntime]]:
        """Every loaded version, by model."""
        with self._lock:
            return {m: dict(e.versions) for m, e in self._models.items()}

    def policies(self) -> dict[str, Policy]:
        with self._lock:
            return {m: e.policy for m, e in self._models.items()}

    def serving(self) -> dict[str, ModelRuntime]:
        """The version each model serves by default (with a split: its largest share)."""
        out = {}
        for m, e in list(self._models.items()):
            if e.versions:
                p = e.policy
                top = max(p.split, key=p.split.get) if p.split else ""
                out[m] = self.get(m, label=top if p.labels.get(top) in e.versions else "")
        return out

    # ------------------------------------------------------------------ operating

    def change_policy(self, model: str, change: Callable[[Policy], object]) -> object:
        """Apply `change` to the model's policy on disk, then reload. Returns what `change` returned."""
        if model not in MODEL_KINDS:
            raise ModelNotFound(f"model: unknown model {model!r}, expected one of {list(MODEL_KINDS)}")
        model_dir = self.root / model
        if not model_dir.is_dir():
            raise ModelNotFound(f"model: {model} has no directory in the repository")
        with self._reload_lock:
            policy = Policy.read(model_dir)
            try:
                result = change(policy)
            except PolicyError as e:
                raise InvalidInput(str(e)) from None
            policy.write(model_dir)
        self.reload()
        return result
