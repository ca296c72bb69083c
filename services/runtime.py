"""One loaded model version: its metadata, its verified onnxruntime session and the feature pipeline.

A version whose graph holds the features (metadata `features_in_graph`, export/feature_graph.py) is fed the raw
columns after the same validation, and answers the features beside its outputs; the Python feature pipeline
(features.Pipeline.transform) runs only for the versions without it."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnxruntime as ort

from dwcp_inference import features, metadata
from dwcp_inference.raw_inputs import edge_columns, graph_feed_plan
from dwcp_inference.metadata import MetadataError, ModelMetadata

from . import deadline
from .batching import MicroBatcher
from .errors import DeadlineExpired, NonFiniteOutput, VersionRefused


@dataclass(frozen=True)
class Computed:
    """What one run of a version gives for its rows: the features it computed (the model input, [N, ...]) and its
    outputs by name (first axis: the same N rows)."""

    features: np.ndarray
    outputs: dict[str, np.ndarray]

    def rows(self, start: int, stop: int) -> "Computed":
        """The part of this result for rows start..stop-1 (one call's share of a micro-batch)."""
        return Computed(self.features[start:stop], {name: v[start:stop] for name, v in self.outputs.items()})


class DriftMeter:
    """Input drift against the training distribution: per numeric feature, the root mean square of its
    standardised value over recent requests (an exponential moving average). The training data gives 1.0 for
    every feature (the metadata's mean and std were fitted on it); 3 means inputs sit three training standard
    deviations away on average."""

    EVERY = 8  # one request in EVERY is measured: the meter costs as much as the feature pipeline otherwise
    ALPHA = 0.08  # weight of each measured request: about the last hundred measured (800 requests)

    def __init__(self, meta: ModelMetadata):
        self.names = [f.name for f in meta.features if f.transform != "one_hot"]
        cols = []
        i = 0
        for f in meta.features:
            if f.transform != "one_hot":
                cols.append(i)
            i += f.width
        self.columns = np.array(cols, dtype=int)
        self.mean_square = np.ones(len(cols))
        self.seen = 0
        self.calls = 0

    def observe(self, x: np.ndarray) -> None:
        self.calls += 1
        if self.seen and self.calls % self.EVERY:
            return
        squares = (x[..., self.columns].astype(np.float64) ** 2).reshape(-1, len(self.columns)).mean(axis=0)
        self.mean_square += self.ALPHA * (squares - self.mean_square)  # races only blur an average
        self.seen += 1

    def rms(self) -> dict[str, float]:
        return dict(zip(self.names, np.sqrt(self.mean_square).tolist()))


@dataclass
class ModelRuntime:
    meta: ModelMetadata
    session: ort.InferenceSession
    path: Path
    loaded_at: float = field(default_factory=time.time)
    drift: DriftMeter | None = None
    batcher: MicroBatcher | None = None  # set by the repository when micro-batching is on

    def __post_init__(self) -> None:
        self._constants: dict[str, Any] = {}
        self._feed: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] | None = None
        self.drift = DriftMeter(self.meta)
        self.pipeline = features.Pipeline(self.meta.raw_fields, self.meta.features)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    @classmethod
    def load(cls, version_dir: Path, threads: int = 1) -> "ModelRuntime":
        """Load and verify a version: metadata schema, checksum, tensor names and shapes, test vectors.
        Raises VersionRefused with the reason when any check fails."""
        version_dir = Path(version_dir)
        try:
            meta = metadata.read(version_dir)
        except MetadataError as e:
            raise VersionRefused(str(e)) from e
        if meta.version != version_dir.name:
            raise VersionRefused(f"metadata says version {meta.version!r} but the directory is {version_dir.name!r}")
        model_file = version_dir / metadata.MODEL_FILE
        if not model_file.is_file():
            raise VersionRefused(f"{metadata.MODEL_FILE} is missing")
        digest = metadata.sha256_file(model_file)
        if digest != meta.sha256:
            raise VersionRefused(f"sha256 of {metadata.MODEL_FILE} is {digest[:12]}..., metadata says "
                                 f"{meta.sha256[:12]}...")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # The arena keeps what a session allocated after the session is gone: versions swapped in and out
        # would then grow the process. Our models are small; plain malloc costs nothing measurable here.
        opts.enable_cpu_mem_arena = False
        try:
            session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own error types for corrupt graphs
            raise VersionRefused(f"onnxruntime cannot load {metadata.MODEL_FILE}: {e}") from e
        rt = cls(meta, session, version_dir)
        rt._verify()
        return rt

    def _verify(self) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        declared_inputs = [t.name for t in self.meta.inputs]
        if inputs != (declared_inputs if self.meta.features_in_graph else declared_inputs[:1]) or \
                (len(inputs) != 1 and not self.meta.features_in_graph):
            raise VersionRefused(f"model inputs {inputs} do not match metadata {declared_inputs}")
        features_out = next((o for o in self.session.get_outputs() if o.name == self.meta.feature_output), None)
        width = (features_out or self.session.get_inputs()[0]).shape[-1]
        if isinstance(width, int) and width != len(self.meta.feature_names):
            raise VersionRefused(f"model takes {width} features, metadata lists {len(self.meta.feature_names)}")
        outputs = {o.name for o in self.session.get_outputs()}
        declared = {t.name for t in self.meta.outputs} | ({self.meta.feature_output} if self.meta.features_in_graph
                                                          else set())
        if outputs != declared:
            raise VersionRefused(f"model outputs {sorted(outputs)} do not match metadata {sorted(declared)}")
        if not self.meta.test_vectors:
            raise VersionRefused("metadata has no test vectors")
        for i, vec in enumerate(self.meta.test_vectors):
            if self.meta.features_in_graph:
                if "raw" not in vec:
                    raise VersionRefused(f"test vector {i}: no raw columns (a version with the feature graph)")
                computed = self.run_raw({k: np.asarray([v]) for k, v in vec["raw"].items()})
                got = {**computed.outputs, self.meta.feature_output: computed.features}
                expected_outputs = {**vec["outputs"], self.meta.feature_output: vec["input"]}
            else:
                got = self.run(np.asarray([vec["input"]], dtype=np.float32))
                expected_outputs = vec["outputs"]
            for name, expected in expected_outputs.items():
                want = np.asarray(expected, dtype=np.float64)
                diff = np.abs(np.asarray(got[name][0], dtype=np.float64) - want)
                err = float(np.max(diff / (1.0 + np.abs(want))))  # as at export (export/publish.py)
                if not err <= self.meta.tolerance:
                    raise VersionRefused(f"test vector {i}: output {name} differs by {err:.3g} "
                                         f"(tolerance {self.meta.tolerance:g})")
        self._probe_edges()

    def _probe_edges(self) -> None:
        """Run the model at the edges of every raw field's valid range (the ranges the feature layer enforces,
        from the metadata's raw_fields); refuse the version if any output there is NaN or infinite."""
        columns = edge_columns(self.meta.raw_fields, self.meta.window)
        if columns is None:
            return
        try:
            self.pipeline.validate(columns)
            out = self.run_raw(columns).outputs if self.meta.features_in_graph else \
                self.run(self.pipeline.transform(columns))
        except Exception as e:  # noqa: BLE001 - any failure at a valid input is a reason to refuse
            raise VersionRefused(f"edge probe (inputs at the ends of each raw field's range): {e}") from e
        bad = nonfinite_rows(out)
        if bad:
            rows, names = bad
            raise VersionRefused(f"edge probe: non-finite output ({', '.join(names)}) at the ends of the raw fields' "
                                 f"valid ranges (probe rows {rows[:10]})")

    def check_finite(self, outputs: Mapping[str, np.ndarray]) -> None:
        """Raise NonFiniteOutput naming the items (rows) of any output the answer uses that is NaN or infinite."""
        bad = nonfinite_rows(outputs)
        if bad:
            raise NonFiniteOutput(self.name, self.version, *bad)

    def constants(self, key: str, make: Callable[[], Any]) -> Any:
        """Values a decision rule derives from the metadata, made on first use (a version never changes)."""
        value = self._constants.get(key)
        if value is None:
            value = self._constants[key] = make()
        return value

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The model on a feature matrix (a version without the feature graph)."""
        names = [o.name for o in self.meta.outputs]
        out = dict(zip(names, self.session.run(names, {self.meta.inputs[0].name: x})))
        return self._one_per_item(out, len(x))

    def run_raw(self, columns: Mapping[str, np.ndarray]) -> Computed:
        """The model on validated raw columns (a version with the feature graph): the features it computed and its
        outputs."""
        if self._feed is None:
            self._raw_outputs = [o.name for o in self.meta.outputs] + [self.meta.feature_output]
            self._feed = feed_plan(self.meta)  # last: other threads test it
        names = self._raw_outputs
        values = self.session.run(names, {name: prepare(columns[name]) for name, prepare in self._feed})
        return Computed(values[-1], self._one_per_item(dict(zip(names[:-1], values)), len(values[-1])))

    def _one_per_item(self, out: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        for name, v in out.items():  # one answer per item, or a wrong answer would be given to someone
            if v.shape[:1] != (rows,):
                raise RuntimeError(f"{self.name} v{self.version}: output {name} has shape {v.shape} for "
                                   f"{rows} input rows")
        return out

    def infer(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Validate raw columns, build the features and run the model (with other calls' rows when micro-batching).
        Returns (features, outputs). Raises features.FeatureError for input the model cannot take."""
        if self.batcher:
            computed = self.batcher(dict(columns))
        elif deadline.passed():  # the caller gave up: do not compute
            raise DeadlineExpired("the deadline passed before the model ran")
        else:
            computed = self.compute(columns)
        return computed.features, computed.outputs

    def compute(self, columns: Mapping[str, np.ndarray]) -> Computed:
        """Validate raw columns, build the features and run the model on them, now (the micro-batcher's unit of
        work: infer is what callers use). Meters input drift on the features."""
        self.pipeline.validate(columns)
        if self.meta.features_in_graph:  # drift is metered on the features the graph answers
            computed = self.run_raw(columns)
        else:
            x = self.pipeline.transform(columns)
            computed = Computed(x, self.run(x))
        self.drift.observe(computed.features)
        return computed


SMALL_COLUMN = 64  # values of a categorical column up to which a dict lookup beats one comparison per word


def feed_plan(meta: ModelMetadata) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """raw_inputs.graph_feed_plan, with a small categorical column (a single call's window) mapped to its indices by
    one dict lookup per value rather than one array comparison per vocabulary word: the same int64 indices."""
    vocabularies = {f.name: f.vocabulary for f in meta.raw_fields if f.vocabulary}
    plan = []
    for name, prepare in graph_feed_plan(meta):
        vocabulary = vocabularies.get(name)
        if vocabulary:
            prepare = functools.partial(_indices, {word: i for i, word in enumerate(vocabulary)}, prepare)
        plan.append((name, prepare))
    return plan


def _indices(index: dict[str, int], large: Callable[[np.ndarray], np.ndarray], column: np.ndarray) -> np.ndarray:
    column = np.asarray(column)
    if column.size > SMALL_COLUMN:
        return large(column)
    return np.array([index.get(v, -1) for v in column.ravel().tolist()], dtype=np.int64).reshape(column.shape)


def nonfinite_rows(outputs: Mapping[str, np.ndarray]) -> tuple[list[int], list[str]] | None:
    """The rows (first axis) with a NaN or infinite value in any floating output, and those outputs' names."""
    rows: set[int] = set()
    names = []
    for name, v in outputs.items():
        v = np.asarray(v)
        if v.dtype.kind != "f" or v.ndim == 0:
            continue
        finite = np.isfinite(v)
        if finite.all():  # the usual case: one reduction, the rows only when something is wrong
            continue
        ok = finite.reshape(len(v), -1).all(axis=1)
        if not ok.all():
            rows.update(np.flatnonzero(~ok).tolist())
            names.append(name)
    return (sorted(rows), names) if rows else None
