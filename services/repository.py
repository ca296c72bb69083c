"""The model repository on disk: `<root>/<model>/<version>/{model.onnx,metadata.json}`, and each model's policy
(policy.py): `<root>/<model>/policy.json`, or with a state directory `<state_dir>/<model>/policy.json`.

`reload` rescans: it loads and verifies the versions the policy wants (runtime.ModelRuntime.load), keeps
versions already loaded as they are, and swaps the new set in at once. A version that fails verification is
refused with its reason and never serves; a request that started on a version finishes on it, since it holds
the version's runtime, which is released only when the last such request drops it. Directories whose names
start with a dot (staging areas of a publish in progress) are ignored.

One bad part affects only itself: a version directory that cannot be read (permissions) is refused with its
reason like one that fails verification; a model directory that cannot be listed keeps what it had loaded; a
policy file that does not validate is refused (logged once per change of the file, shown by `policy_error`)
while the last good policy keeps serving. At start (`load_all`) a bad policy file stops the server instead.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import grpc

from dwcp_inference import MODEL_KINDS, metadata

from .batching import BatchPolicy, MicroBatcher
from .errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady, VersionRefused, shown
from .policy import Policy, PolicyError, PolicyFileInvalid, PolicyInvalid, PolicyStore, validate
from .runtime import ModelRuntime

log = logging.getLogger(__name__)


class RepositoryUnreadable(InferenceError):
    """An admin change could not take effect because the repository cannot be scanned; nothing changed."""

    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class Refusal:
    model: str
    version: str
    reason: str


def _fingerprint(vdir: Path) -> tuple:
    """Changes whenever a version's files change (or appear). For a directory whose files cannot be looked at
    (permissions), the directory's own mode and change time: a chmod or chown that fixes it changes them."""
    out = []
    for name in (metadata.METADATA_FILE, metadata.MODEL_FILE):
        try:
            st = (vdir / name).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
        except OSError as e:
            try:
                st = vdir.stat()
                return ("unreadable", e.errno, st.st_mode, st.st_uid, st.st_gid, st.st_ctime_ns)
            except OSError:
                return ("unreadable", e.errno)
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
                 batching: BatchPolicy | None = None, state_dir: Path | str | None = None):
        self.root = Path(root)
        self.store = PolicyStore(self.root, Path(state_dir) if state_dir else None)
        self.threads = threads_per_session
        self.batching = batching
        self.listener = listener or (lambda model, version, event: None)
        self._lock = threading.Lock()     # guards the swap of _models
        self._reload_lock = threading.Lock()  # one reload at a time
        self._models: dict[str, _Model] = {}
        self._refused: dict[tuple[str, str], tuple[tuple, str]] = {}  # (model, version) -> (fingerprint, reason)
        self._policy_errors: dict[str, tuple[tuple, str]] = {}  # model -> (policy file fingerprint, message)
        self._unlisted: dict[str, str] = {}  # model -> why its directory cannot be listed
        self._preloaded: dict[tuple[str, str], tuple[tuple, ModelRuntime]] = {}  # verified ahead of a pin

    @property
    def refused(self) -> list[Refusal]:
        return [Refusal(m, v, reason) for (m, v), (_, reason) in sorted(self._refused.items())]

    def policy_error(self, model: str) -> str:
        """Why the model's policy file is refused ("" when it is not): the last good policy is serving."""
        error = self._policy_errors.get(model)
        return error[1] if error else ""

    def load_all(self) -> None:
        """The first scan. Raises PolicyInvalid (one line: file, field, fault) when a policy file is bad."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} does not exist")
        self.reload(strict=True)

    def reload(self, strict: bool = False) -> bool:
        """Rescan the repository; returns whether anything changed (loaded versions, policies, refusals). When
        the repository cannot be read (gone, unmounted, permissions), raises OSError and changes nothing: what is
        loaded keeps serving."""
        with self._reload_lock:
            current = self._models
            models: dict[str, _Model] = {}
            refused_before = dict(self._refused)
            errors_before = {m: e[1] for m, e in self._policy_errors.items()}
            changed = False
            model_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
            for model_dir in model_dirs:
                if model_dir.name not in MODEL_KINDS:
                    continue
                try:
                    entry, entry_changed = self._scan(model_dir, current.get(model_dir.name), strict)
                except PermissionError as e:  # this model's directory cannot be listed: keep what it had
                    if self._unlisted.get(model_dir.name) != str(e):
                        log.error("%s: cannot list %s, keeping what is loaded: %s", model_dir.name, model_dir, e)
                    self._unlisted[model_dir.name] = str(e)
                    if model_dir.name in current:
                        models[model_dir.name] = current[model_dir.name]
                    continue
                self._unlisted.pop(model_dir.name, None)
                models[model_dir.name] = entry
                changed |= entry_changed
            for key in [k for k in self._refused if k[0] not in models]:  # a model directory that went away
                del self._refused[key]
            for name in [m for m in self._policy_errors if m not in models]:
                del self._policy_errors[name]
            changed |= self._refused != refused_before
            changed |= {m: e[1] for m, e in self._policy_errors.items()} != errors_before
            for name in set(current) - set(models):
                for version in current[name].versions:
                    self.listener(name, version, "unloaded")
                changed = True
            with self._lock:
                self._models = models
            self._preloaded.clear()  # verified for a change that did not come
            return changed

    def _policy(self, name: str, old: _Model | None, strict: bool) -> Policy:
        """The model's policy; when its file is refused, the last good one (logged once per change of the file)."""
        fingerprint = self.store.fingerprint(name)
        try:
            policy = self.store.read(name)
        except PolicyInvalid as e:
            if strict:
                raise
            if self._policy_errors.get(name, ((), ""))[0] != fingerprint:
                log.error("%s: policy refused, the last good policy keeps serving: %s", name, e)
            self._policy_errors[name] = (fingerprint, str(e))
            return old.policy if old else Policy()
        if self._policy_errors.pop(name, None) is not None:
            log.info("%s: policy %s accepted again", name, self.store.source(name))
        return policy

    def _scan(self, model_dir: Path, old: _Model | None, strict: bool = False) -> tuple[_Model, bool]:
        name = model_dir.name
        policy = self._policy(name, old, strict)
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
        preloaded = self._preloaded.pop((name, vdir.name), None)
        rt = preloaded[1] if preloaded and preloaded[0] == fp else self._verified(name, vdir, fp)
        if rt is None:
            self.listener(name, vdir.name, "refused")
            return None
        if self.batching and self.batching.max_rows > 1:
            rt.batcher = MicroBatcher(name, rt.compute, self.batching)
        log.info("loaded %s version %s", name, vdir.name)
        self.listener(name, vdir.name, "loaded")
        return rt

    def _verified(self, name: str, vdir: Path, fp: tuple) -> ModelRuntime | None:
        """ModelRuntime.load, or None with the refusal recorded (a version that fails verification, or whose
        files cannot be read)."""
        try:
            rt = ModelRuntime.load(vdir, self.threads)
        except (VersionRefused, OSError) as e:
            reason = str(e) if isinstance(e, VersionRefused) else f"cannot read {vdir}: {e.strerror or e}"
            self._refused[(name, vdir.name)] = (fp, reason)
            log.error("refused %s version %s: %s", name, vdir.name, reason)
            return None
        self._refused.pop((name, vdir.name), None)
        return rt

    # ------------------------------------------------------------------ answering

    def get(self, model: str, version: str = "", label: str = "") -> ModelRuntime:
        """The version that answers: the one named, the one a label names, or the policy's choice."""
        if model not in MODEL_KINDS:
            raise ModelNotFound(f"model: unknown model {shown(model)}, expected one of {list(MODEL_KINDS)}")
        with self._lock:
            entry = self._models.get(model)
        if entry is None or not entry.versions:
            raise ModelNotReady(f"model {model}: no valid version is loaded")
        versions, policy = entry.versions, entry.policy
        if version:
            if version not in versions:
                raise ModelNotFound(f"model.version: {model} has no loaded version {shown(version)}, "
                                    f"loaded: {sorted(versions, key=int)}")
            return versions[version]
        if label and label != "latest":
            target = policy.labels.get(label)
            if target is None or target not in versions:
                raise ModelNotFound(f"model.label: {model} has no label {shown(label)} on a loaded version "
                                    f"(labels: {policy.labels})")
            return versions[target]
        if label == "latest":  # the newest loaded version, whatever the policy's labels say
            return versions[max(versions, key=int)]
        return self._default(entry)

    @staticmethod
    def _default(entry: _Model) -> ModelRuntime:
        """The policy's choice: the split (0-weight labels and labels on unloaded versions drop out; none left:
        what follows), else stable on a loaded version, else the highest loaded version. Never raises."""
        versions, policy = entry.versions, entry.policy
        weights = policy.split_weights(versions)
        if weights:
            chosen = random.choices(list(weights), weights=list(weights.values()))[0]
            return versions[policy.labels[chosen]]
        return versions[policy.labels["stable"]] if policy.labels.get("stable") in versions else versions[
            max(versions, key=int)]

    def loaded(self) -> dict[str, dict[str, ModelRuntime]]:
        """Every loaded version, by model."""
        with self._lock:
            return {m: dict(e.versions) for m, e in self._models.items()}

    def policies(self) -> dict[str, Policy]:
        with self._lock:
            return {m: e.policy for m, e in self._models.items()}

    def serving(self) -> dict[str, ModelRuntime]:
        """The version each model serves by default (with a split: its largest share)."""
        with self._lock:
            models = dict(self._models)
        out = {}
        for m, e in models.items():
            if e.versions:
                weights = e.policy.split_weights(e.versions)
                top = max(weights, key=weights.get) if weights else None
                out[m] = e.versions[e.policy.labels[top]] if top else self._default(e)
        return out

    # ------------------------------------------------------------------ operating

    def verify(self, model: str, version: str) -> str:
        """Load and verify a version ahead of a policy change that would load it: "" when it is (or would be)
        loaded, else the reason it is refused. A verified runtime is kept for the rescan that follows."""
        with self._reload_lock:
            if version in self.loaded().get(model, {}):
                return ""
            vdir = self.root / model / version
            fp = _fingerprint(vdir)
            refused = self._refused.get((model, version))
            if not (refused and refused[0] == fp):
                rt = self._verified(model, vdir, fp)
                if rt is not None:
                    self._preloaded[(model, version)] = (fp, rt)
                    return ""
            changed = self._refused.get((model, version)) != refused
            reason = self._refused[(model, version)][1]
        if changed:
            self.listener(model, version, "refused")
        return reason

    def change_policy(self, model: str, change: Callable[[Policy], object]) -> object:
        """Apply `change` to the model's current policy, validate the result, write it where admin state lives
        (policy.PolicyStore), then reload. Returns what `change` returned. Nothing is written when `change` or
        the validation refuses (InvalidInput) or the write fails (PolicyNotWritable, FAILED_PRECONDITION); when
        the reload after the write fails, the file is put back as it was."""
        if model not in MODEL_KINDS:
            raise ModelNotFound(f"model: unknown model {shown(model)}, expected one of {list(MODEL_KINDS)}")
        if not (self.root / model).is_dir():
            raise ModelNotFound(f"model: {model} has no directory in the repository")
        with self._reload_lock:
            try:
                policy = self.store.read(model)
            except PolicyInvalid as e:
                raise PolicyFileInvalid(f"{e}; fix or remove the file, then retry") from None
            try:
                result = change(policy)
                validate(asdict(policy), "policy")
            except PolicyError as e:
                raise InvalidInput(str(e)) from None
            saved = self.store.snapshot(model)
            self.store.write(model, policy)
        try:
            self.reload()
        except OSError as e:
            self.store.restore(model, saved)
            raise RepositoryUnreadable(f"cannot rescan the repository {self.root} after the change: "
                                       f"{e.strerror or e}; the policy was put back as it was") from None
        except BaseException:
            self.store.restore(model, saved)
            raise
        return result
