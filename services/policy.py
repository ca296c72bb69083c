"""Which versions of a model are loaded and which one answers: `policy.json` per model.

    {"keep_latest": 2, "pinned": ["3"], "disabled": ["5"], "labels": {"stable": "3", "canary": "4"},
     "split": {"stable": 90, "canary": 10}, "history": {"stable": ["2"]},
     "stages": {"3": "production", "4": "staging", "2": "archived"}}

Loaded: the `keep_latest` highest valid versions, the pinned and the labelled ones, and those in the staging or
production stage, never the disabled. A version's stage (none, absent from `stages` -> staging -> production ->
archived) is its place in continuous training (docs/continuous-training.md): the version in staging is the
candidate the server shadows (label `candidate`, kept in step by the admin API's SetStage).
Answering a request with no version or label: the weighted `split` between labels if set, else `stable` if it
names a loaded version, else the highest loaded version. The file is written by the admin API (atomically) and
may be edited by hand; a missing file means the defaults. Every policy is validated on the way in (`validate`):
a file that does not validate is refused with a message naming the file and the field.

Where it lives (`PolicyStore`): with no state directory, `<repository>/<model>/policy.json`, read and written
there. With `--state-dir`, the admin API writes `<state_dir>/<model>/policy.json` only (the server never writes
into the repository); it is read from there, else from the repository's own `policy.json` (a read-only default a
publisher may ship), else the defaults.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import grpc

from .errors import InferenceError

POLICY_FILE = "policy.json"
STAGES = ("", "none", "staging", "production", "archived")  # "" and "none": no stage
CANDIDATE = "candidate"  # the label of the version in staging: the server shadows it


class PolicyError(ValueError):
    """A policy change is invalid (an admin request that cannot apply)."""


class PolicyInvalid(PolicyError):
    """A policy file does not validate: the message names the file, the field and what is wrong. Raised at start
    so the server refuses to start on it; on reload the last good policy keeps serving."""


class PolicyFileInvalid(InferenceError):
    """An admin change cannot start from the model's policy file, which does not validate."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PolicyNotWritable(InferenceError):
    """The policy file cannot be written (read-only file system, permissions, full disk): nothing changed."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class LabelNotFound(InferenceError):
    code = grpc.StatusCode.NOT_FOUND


@dataclass
class Policy:
    keep_latest: int = 2
    pinned: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)  # earlier versions of each label, newest last
    stages: dict[str, str] = field(default_factory=dict)  # version -> staging, production or archived

    @classmethod
    def read(cls, model_dir: Path) -> "Policy":
        """`<model_dir>/policy.json`, validated, or the defaults when there is none."""
        return read_file(Path(model_dir) / POLICY_FILE) or cls()

    def write(self, model_dir: Path) -> None:
        write_file(Path(model_dir) / POLICY_FILE, self)

    def wanted(self, on_disk: list[str]) -> list[str]:
        """The versions to load, of those on disk (sorted oldest first)."""
        keep = set(on_disk[-self.keep_latest:]) | set(self.pinned) | set(self.labels.values()) | \
            {v for v, stage in self.stages.items() if stage in ("staging", "production")}
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

    def remove_label(self, label: str) -> None:
        """Forget `label` and its history (LabelNotFound when there is no such label)."""
        if label not in self.labels:
            raise LabelNotFound(f"label {label!r}: no such label (labels: {self.labels})")
        if label == "stable":
            raise PolicyError("label 'stable': it is the default route; promote or roll it back instead")
        if label == CANDIDATE:
            raise PolicyError(f"label {CANDIDATE!r}: it follows the version in staging; set that version's stage "
                              "instead")
        if label in self.split:
            raise PolicyError(f"label {label!r} is in the split {self.split}: change the split first")
        del self.labels[label]
        self.history.pop(label, None)

    def set_stage(self, version: str, stage: str) -> None:
        """Move a version to a stage ("" or "none": out of the lifecycle). One version at most is in staging: it
        carries the `candidate` label, which follows it."""
        if stage not in STAGES:
            raise PolicyError(f"stage: expected one of {list(STAGES)}, got {stage!r}")
        if stage == "staging":
            for v, s in list(self.stages.items()):
                if s == "staging" and v != version:
                    self.stages[v] = "archived"
            self.labels[CANDIDATE] = version
        elif self.labels.get(CANDIDATE) == version:
            del self.labels[CANDIDATE]
            self.split.pop(CANDIDATE, None)
        if stage == "archived":  # an archived version answers nothing by default: its labels but stable go
            for label in [lb for lb, v in self.labels.items() if v == version and lb != "stable"]:
                del self.labels[label]
                self.split.pop(label, None)
        if stage in ("", "none"):
            self.stages.pop(version, None)
        else:
            self.stages[version] = stage

    def split_weights(self, loaded: set[str] | dict) -> dict[str, float]:
        """The split's labels that point at a loaded version and weigh more than 0 (validated weights are finite)."""
        return {lb: w for lb, w in self.split.items() if w > 0 and self.labels.get(lb) in loaded}


# ---------------------------------------------------------------------------------------------- validation

def _is_version(v: object) -> bool:
    return isinstance(v, str) and v.isdigit() and v.isascii()


def _versions(source: str, name: str, value: object) -> list[str]:
    if not isinstance(value, list):
        raise PolicyInvalid(f"{source}: {name}: expected a list of version strings such as [\"3\"], "
                            f"got {value!r}")
    for i, v in enumerate(value):
        if not _is_version(v):
            raise PolicyInvalid(f"{source}: {name}[{i}]: expected a version string of digits such as \"3\", "
                                f"got {v!r}")
    return list(value)


def _mapping(source: str, name: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise PolicyInvalid(f"{source}: {name}: expected an object, got {value!r}")
    return value


def validate(data: object, source: str = "policy") -> Policy:
    """A Policy from parsed JSON, every field checked; PolicyInvalid names `source`, the field and the fault."""
    if not isinstance(data, dict):
        raise PolicyInvalid(f"{source}: expected a JSON object, got {type(data).__name__}")
    known = [f.name for f in fields(Policy)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise PolicyInvalid(f"{source}: unknown field(s) {unknown}, expected some of {known}")
    p = Policy()
    if "keep_latest" in data:
        k = data["keep_latest"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise PolicyInvalid(f"{source}: keep_latest: expected an integer >= 1, got {k!r}")
        p.keep_latest = k
    for name in ("pinned", "disabled"):
        if name in data:
            setattr(p, name, _versions(source, name, data[name]))
    for label, v in _mapping(source, "labels", data.get("labels", {})).items():
        if not _is_version(v):
            raise PolicyInvalid(f"{source}: labels.{label}: expected a version string of digits such as \"3\", "
                                f"got {v!r}")
        p.labels[label] = v
    for label, w in _mapping(source, "split", data.get("split", {})).items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise PolicyInvalid(f"{source}: split.{label}: expected a finite number >= 0, got {w!r}")
        if label not in p.labels:
            raise PolicyInvalid(f"{source}: split.{label}: names no label (labels: {p.labels})")
        p.split[label] = float(w)
    if p.split and sum(p.split.values()) <= 0:
        raise PolicyInvalid(f"{source}: split: expected a positive total weight, got {p.split}")
    for label, vs in _mapping(source, "history", data.get("history", {})).items():
        p.history[label] = _versions(source, f"history.{label}", vs)
    for version, stage in _mapping(source, "stages", data.get("stages", {})).items():
        if not _is_version(version):
            raise PolicyInvalid(f"{source}: stages: expected version strings of digits as keys, got {version!r}")
        if stage not in STAGES[2:]:
            raise PolicyInvalid(f"{source}: stages.{version}: expected one of {list(STAGES[2:])}, got {stage!r}")
        p.stages[version] = stage
    staging = sorted(v for v, s in p.stages.items() if s == "staging")
    if len(staging) > 1:
        raise PolicyInvalid(f"{source}: stages: at most one version in staging, got {staging}")
    return p


def read_file(path: Path) -> Policy | None:
    """The policy in `path`, validated; None when there is no such file. PolicyInvalid otherwise."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PolicyInvalid(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise PolicyInvalid(f"{path}: not valid JSON: {e}") from None
    return validate(data, str(path))


def write_file(path: Path, policy: Policy) -> None:
    """Validate, then replace `path` atomically (a temporary file beside it, fsync, rename). On any OSError
    nothing changed and PolicyNotWritable says which path, why, and what to do."""
    validate(asdict(policy), str(path))
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".policy-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(policy), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise PolicyNotWritable(
            f"cannot write the policy {path}: {e.strerror or e} (errno {e.errno}); nothing was changed. Admin "
            f"state must be writable: run the server with --state-dir (DWCP_INFERENCE_STATE_DIR) on a writable "
            f"directory, so the repository can stay read-only") from None


class PolicyStore:
    """Where each model's policy is read and written (see the module's docstring)."""

    def __init__(self, repository: Path, state_dir: Path | None = None):
        self.repository = Path(repository)
        self.state_dir = Path(state_dir) if state_dir else None

    def writable_path(self, model: str) -> Path:
        return (self.state_dir or self.repository) / model / POLICY_FILE

    def source(self, model: str) -> Path:
        """The file the model's policy is read from now (it may not exist: then the defaults)."""
        state = self.writable_path(model)
        if self.state_dir is not None and not os.path.lexists(state):
            return self.repository / model / POLICY_FILE
        return state

    def read(self, model: str) -> Policy:
        return read_file(self.source(model)) or Policy()

    def fingerprint(self, model: str) -> tuple:
        """Changes whenever the file the policy is read from changes (or appears, or goes)."""
        path = self.source(model)
        try:
            st = path.stat()
            return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError as e:
            return (str(path), e.errno)

    def write(self, model: str, policy: Policy) -> None:
        write_file(self.writable_path(model), policy)

    def snapshot(self, model: str) -> bytes | None:
        """The writable file's bytes (None: absent), to put back with `restore` if an operation fails later."""
        try:
            return self.writable_path(model).read_bytes()
        except FileNotFoundError:
            return None

    def restore(self, model: str, saved: bytes | None) -> None:
        path = self.writable_path(model)
        if saved is None:
            path.unlink(missing_ok=True)
        else:
            write_file(path, read_from_bytes(saved, str(path)))


def read_from_bytes(data: bytes, source: str) -> Policy:
    return validate(json.loads(data), source)
