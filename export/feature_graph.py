"""The features as ONNX: a graph from a version's feature spec that computes, from the raw columns, what
dwcp_inference/features.py computes (features.py stays the reference: training uses it, and parity is checked
against it), composed in front of the trained model so model.onnx takes raw columns.

Inputs: one tensor per raw field a feature reads, named after the field. Numeric fields are float64, [N] (or
[N, W] for a model with a window of W > 1 samples); the graph computes in float64, like features.py, and casts
the feature matrix to float32 at the end, so the two agree to float64 rounding. Categorical fields are int64
indices into the field's vocabulary (the server looks the strings up while validating them): one-hot is then an
Equal against 0..V-1, and no string tensor crosses into onnxruntime (opset 17 has no string Equal; a
LabelEncoder would add the ai.onnx.ml domain to every graph for a lookup the validation does anyway).
Payload traits computed from a payload sample (entropy, zlib ratio) stay outside: callers or the server compute
them into the raw fields `payload_entropy` and `payload_ratio` (byte histograms and zlib are no ONNX ops).

The composed graph answers the features too, as output `feature_output` (the trained model's input name): the
server's drift meter and the decision rules that read features (the anomaly contributions, an imported
autoencoder's reconstruction error) take them from there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dwcp_inference.features import (HISTORY_TRANSFORMS, LEVEL_FLOOR, LOG_FLOOR, ONSET, REL_FLOOR, SHORT,
                                     TAIL_TRANSFORMS, Z_LIMIT, Feature)
from dwcp_inference.metadata import ModelMetadata

FEATURE_OUTPUT_KEY = "dwcp.feature_output"  # in a composed model's metadata_props: the features output's name
PREFIX = "features/"  # every tensor and node the feature graph adds is named under it
CAST_NODE = PREFIX + "to_float32"  # the last node: its output is the features, the trained model's input
MIN_OPSET = 13  # Reshape, Slice with inputs, TopK with k as input, Clip-free arithmetic


class FeatureGraphError(ValueError):
    """The feature spec or the trained model cannot be composed."""


def raw_sources(meta: ModelMetadata) -> list[Any]:
    """The raw fields the features read, in the metadata's order: the composed graph's inputs."""
    used = {f.source for f in meta.features}
    return [f for f in meta.raw_fields if f.name in used]


class _Builder:
    def __init__(self, opset: int, rank: int, window: int):
        self.opset, self.rank, self.window = opset, rank, window
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self._n = 0
        self._consts: dict[tuple, str] = {}

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{PREFIX}{hint}_{self._n}"

    def const(self, value: Any, dtype: Any = np.float64) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.name("c")
            self.constants.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def op(self, op_type: str, *inputs: str, hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def topk_values(self, x: str, k: int) -> str:
        out, idx = self.name("sorted"), self.name("order")
        self.nodes.append(helper.make_node("TopK", [x, self.const([k], np.int64)], [out, idx], name=out,
                                           axis=-1, largest=0, sorted=1))
        return out

    # --- numpy equivalents, last axis

    def slice_last(self, x: str, start: int, end: int) -> str:
        return self.op("Slice", x, self.const([start], np.int64), self.const([end], np.int64),
                       self.const([-1], np.int64))

    def mean(self, x: str) -> str:  # keepdims: [..., 1]
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.const([-1], np.int64), keepdims=1)
        return self.op("ReduceMean", x, axes=[-1], keepdims=1)

    def max(self, x: str) -> str:  # keepdims: [..., 1]
        if self.opset >= 18:
            return self.op("ReduceMax", x, self.const([-1], np.int64), keepdims=1)
        return self.op("ReduceMax", x, axes=[-1], keepdims=1)

    def std(self, x: str, mean: str) -> str:  # numpy's (population) std
        d = self.op("Sub", x, mean)
        return self.op("Sqrt", self.mean(self.op("Mul", d, d)))

    def spread(self, std: str, level: str) -> str:  # features._spread
        floor = self.op("Mul", self.op("Abs", level), self.const(0.01))
        return self.op("Max", self.op("Max", std, floor), self.const(1e-6))

    def clip_z(self, z: str) -> str:
        return self.op("Max", self.op("Min", z, self.const(Z_LIMIT)), self.const(-Z_LIMIT))

    def median(self, x: str, n: int) -> str:  # np.median over the last axis of n values, keepdims
        s = self.topk_values(x, n)
        lo, hi = (n - 1) // 2, n // 2
        if lo == hi:
            return self.slice_last(s, lo, lo + 1)
        pair = self.op("Add", self.slice_last(s, lo, lo + 1), self.slice_last(s, hi, hi + 1))
        return self.op("Div", pair, self.const(2.0))

    def column(self, x: str) -> str:
        """[N] -> [N, 1], [N, W] -> [N, W, 1] (a feature's column in the matrix)."""
        return self.op("Reshape", x, self.const([0] * self.rank + [1], np.int64))


def _unscaled(b: _Builder, f: Feature, x: str) -> str:
    """features._unscaled for the transforms over a window (the elementwise ones: _elementwise_block); history
    transforms answer [..., 1] (keepdims), context_z [..., W - context]."""
    t = f.transform
    if t in HISTORY_TRANSFORMS:
        return _against_history(b, t, x, f.context)
    if t in TAIL_TRANSFORMS:
        return _tail(b, f, x)
    if t == "context_z":
        if not 2 <= f.context < b.window:
            raise FeatureGraphError(f"feature {f.name}: context {f.context} needs a window longer than it "
                                    f"(window {b.window})")
        ref = b.slice_last(x, 0, f.context)
        mean = b.mean(ref)
        z = b.op("Div", b.op("Sub", b.slice_last(x, f.context, b.window), mean), b.spread(b.std(ref, mean), mean))
        return b.clip_z(z)
    raise FeatureGraphError(f"feature {f.name}: transform {t!r} has no ONNX form")


def _tail(b: _Builder, f: Feature, x: str) -> str:
    """features._tail, keepdims: [..., 1]."""
    if not 1 <= f.span <= b.window:
        raise FeatureGraphError(f"feature {f.name}: span {f.span} needs a window at least as long (window {b.window})")
    last = b.slice_last(x, b.window - f.span, b.window)
    if f.transform == "tail_log_mean":
        return b.op("Log", b.op("Max", b.mean(last), b.const(LOG_FLOOR)))
    level = b.op("Max", b.mean(x), b.const(LEVEL_FLOOR))
    if f.transform == "tail_rel_log_mean":
        return b.op("Log", b.op("Add", b.op("Div", b.mean(last), level), b.const(REL_FLOOR)))
    logs = b.op("Log", b.op("Add", b.op("Div", last, level), b.const(REL_FLOOR)))
    return b.std(logs, b.mean(logs))


def _against_history(b: _Builder, kind: str, x: str, context: int = 0) -> str:
    n = b.window - 1  # earlier values
    if n < 2 or (kind == "history_short_z" and n < SHORT):
        raise FeatureGraphError(f"{kind} needs a window of at least {SHORT + 1 if kind == 'history_short_z' else 3} "
                                f"samples, the metadata says {b.window}")
    if kind == "history_onset_z" and (n < ONSET or context > n):
        raise FeatureGraphError(f"history_onset_z needs a window of at least {max(ONSET, context) + 1} samples, the "
                                f"metadata says {b.window}")
    hist, current = b.slice_last(x, 0, n), b.slice_last(x, n, n + 1)
    if kind == "history_onset_z":
        ref = b.slice_last(hist, n - context, n) if context else hist
        mean = b.mean(ref)
        recent = b.max(b.op("Abs", b.op("Sub", b.slice_last(hist, n - ONSET, n), mean)))
        excess = b.op("Max", b.op("Sub", b.op("Abs", b.op("Sub", current, mean)), recent), b.const(0.0))
        z = b.op("Div", excess, b.spread(b.std(ref, mean), mean))
    elif kind == "history_robust_z":
        median = b.median(hist, n)
        mad = b.op("Mul", b.median(b.op("Abs", b.op("Sub", hist, median)), n), b.const(1.4826))
        z = b.op("Div", b.op("Sub", current, median), b.spread(mad, median))
    elif kind == "history_diff_z":
        steps = b.op("Sub", b.slice_last(hist, 1, n), b.slice_last(hist, 0, n - 1))
        scale = b.spread(b.std(steps, b.mean(steps)), b.mean(hist))
        z = b.op("Div", b.op("Sub", current, b.slice_last(hist, n - 1, n)), scale)
    elif kind == "history_short_z":
        ref = b.slice_last(hist, 0, n - (SHORT - 1))
        mean = b.mean(ref)
        value = b.mean(b.slice_last(x, n + 1 - SHORT, n + 1))
        z = b.op("Div", b.op("Sub", value, mean), b.spread(b.std(ref, mean), mean))
    else:  # history_z
        mean = b.mean(hist)
        z = b.op("Div", b.op("Sub", current, mean), b.spread(b.std(hist, mean), mean))
    return b.clip_z(z)


def _feature(b: _Builder, f: Feature, x: str) -> str:
    """One feature's columns, float64 [..., width] (one_hot, history and context transforms)."""
    if f.transform == "one_hot":
        hot = b.op("Equal", b.column(x), b.const(np.arange(len(f.vocabulary)), np.int64))
        return b.op("Cast", hot, to=TensorProto.DOUBLE)
    v = _unscaled(b, f, x)
    scaled = b.op("Div", b.op("Sub", v, b.const(f.mean)), b.const(f.std), hint=f.name)
    return scaled if f.transform in HISTORY_TRANSFORMS or f.transform in TAIL_TRANSFORMS else b.column(scaled)


ELEMENTWISE = ("identity", "log", "log1p", "sin", "cos")


def _matrix(b: _Builder, features: list[Feature]) -> str:
    """The feature matrix, float64 [..., sum(widths)]. Elementwise features are computed together, as one
    [..., K] block (a few nodes over all of them instead of several per feature: onnxruntime's cost here is per
    node, not per value), the others one by one; a final Gather puts the columns in the metadata's order."""
    blocks: list[tuple[str, list[int]]] = []  # (tensor, the feature indices of its columns)
    together = sorted((i for i, f in enumerate(features) if f.transform in ELEMENTWISE),
                      key=lambda i: ELEMENTWISE.index(features[i].transform))  # grouped by transform
    if together:
        blocks.append((_elementwise_block(b, [features[i] for i in together]), together))
    blocks += [(_feature(b, features[i], features[i].source), [i])
               for i in range(len(features)) if i not in together]
    starts, k = {}, 0  # feature index -> its first column in the concatenation
    for _, idx in blocks:
        for i in idx:
            starts[i] = k
            k += features[i].width
    order = [starts[i] + c for i, f in enumerate(features) for c in range(f.width)]
    matrix = b.op("Concat", *[t for t, _ in blocks], axis=-1) if len(blocks) > 1 else blocks[0][0]
    if order != list(range(len(order))):
        matrix = b.op("Gather", matrix, b.const(order, np.int64), axis=-1)
    return matrix


def _elementwise_block(b: _Builder, features: list[Feature]) -> str:
    """identity, log, log1p, sin and cos features (grouped by transform) as one block: each transform over its
    group's columns at once, then the scaling. The same arithmetic as features._unscaled, column by column."""
    columns: dict[str, str] = {}
    for f in features:
        if f.source not in columns:
            columns[f.source] = b.column(f.source)
    groups = []
    for kind in ELEMENTWISE:
        group = [f for f in features if f.transform == kind]
        if not group:
            continue
        x = b.op("Concat", *[columns[f.source] for f in group], axis=-1) if len(group) > 1 else columns[group[0].source]
        if kind == "log1p":
            x = b.op("Log", b.op("Add", b.op("Max", x, b.const(0.0)), b.const(1.0)))
        elif kind == "log":
            x = b.op("Log", b.op("Max", x, b.const(LOG_FLOOR)))
        elif kind in ("sin", "cos"):
            angle = b.op("Div", b.op("Mul", x, b.const(2 * math.pi)), b.const([float(f.period) for f in group]))
            x = b.op(kind.capitalize(), angle)
        groups.append(x)
    block = b.op("Concat", *groups, axis=-1) if len(groups) > 1 else groups[0]
    means = b.const([f.mean for f in features])
    stds = b.const([f.std for f in features])
    return b.op("Div", b.op("Sub", block, means), stds, hint="scaled")


def compose(meta: ModelMetadata, trained: bytes | onnx.ModelProto) -> onnx.ModelProto:
    """The trained model (taking the feature matrix as its one input) with the feature graph in front: inputs
    are the raw columns, outputs the trained model's plus the features (named as the trained model's input)."""
    model = trained if isinstance(trained, onnx.ModelProto) else onnx.load_from_string(trained)
    graph = model.graph
    if len(graph.input) != 1:
        raise FeatureGraphError(f"the trained model takes {len(graph.input)} inputs, expected the feature matrix")
    x_in = graph.input[0]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise FeatureGraphError(f"the trained model's opset is {opset}; the feature graph needs {MIN_OPSET} or newer")
    rank = 2 if meta.window > 1 else 1
    b = _Builder(opset, rank, meta.window)
    raw = raw_sources(meta)
    taken = {t for n in graph.node for t in [*n.input, *n.output]} | {t.name for t in graph.initializer}
    clash = [f.name for f in raw if f.name in taken]
    if clash or any(t.startswith(PREFIX) for t in taken):
        raise FeatureGraphError(f"the trained model already names tensors {clash or PREFIX + '*'}")
    shape: list[Any] = ["batch", meta.window] if rank == 2 else ["batch"]
    inputs = [helper.make_tensor_value_info(f.name, TensorProto.INT64 if f.vocabulary else TensorProto.DOUBLE, shape)
              for f in raw]
    matrix = _matrix(b, meta.features)
    b.nodes.append(helper.make_node("Cast", [matrix], [x_in.name], name=CAST_NODE, to=TensorProto.FLOAT))

    composed = helper.make_graph(
        [*b.nodes, *graph.node], graph.name or "model", inputs, [*graph.output, x_in],
        initializer=[*b.constants, *graph.initializer], value_info=list(graph.value_info),
        sparse_initializer=list(graph.sparse_initializer))
    out = helper.make_model(composed, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                            producer_name="dwcp-inference feature graph", producer_version=model.producer_version)
    for f in model.functions:
        out.functions.append(f)
    helper.set_model_props(out, {**{p.key: p.value for p in model.metadata_props}, FEATURE_OUTPUT_KEY: x_in.name})
    onnx.checker.check_model(out)
    return out


def trained_part(onnx_bytes: bytes) -> bytes:
    """The trained model of a graph that holds the features (re-publishing a published version): the sub-graph
    from the features output to the other outputs. A model without the feature graph is returned as it is."""
    model = onnx.load_from_string(onnx_bytes)
    name = next((p.value for p in model.metadata_props if p.key == FEATURE_OUTPUT_KEY), "") or \
        next((n.output[0] for n in model.graph.node if n.name == CAST_NODE), "")  # composed before the marker
    if not name:
        return onnx_bytes
    outputs = [o.name for o in model.graph.output if o.name != name]
    part = onnx.utils.Extractor(model).extract_model([name], outputs)
    part.graph.ClearField("value_info")  # its input is now the features; value_info would describe them twice
    del part.metadata_props[:]
    part.metadata_props.extend(p for p in model.metadata_props if p.key != FEATURE_OUTPUT_KEY)
    return part.SerializeToString()


# ------------------------------------------------------------------ raw inputs for parity checks

def sample_raw(meta: ModelMetadata, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Raw columns like the training data: each numeric field drawn so that its first feature lands within a few
    training standard deviations (the transform inverted), then kept in the field's range; windows wander
    around an item's level; categorical fields uniform over their vocabulary."""
    steps = meta.window if meta.window > 1 else 0
    shape = (n, steps) if steps else (n,)
    by_source: dict[str, Feature] = {}
    for f in meta.features:
        by_source.setdefault(f.source, f)
    columns: dict[str, np.ndarray] = {}
    for field in meta.raw_fields:
        if field.vocabulary:
            columns[field.name] = np.asarray(field.vocabulary)[rng.integers(0, len(field.vocabulary), size=shape)]
            continue
        lo = -np.inf if field.min is None else field.min
        hi = np.inf if field.max is None else field.max
        f = by_source.get(field.name)
        if f is None:  # declared (and validated) but read by no feature: any valid value
            columns[field.name] = np.full(shape, np.clip(0.0, lo, hi))
            continue
        z = rng.normal(0.0, 1.5, size=(n, 1)) + (0.3 * rng.normal(size=(n, steps)) if steps else 0.0)
        z = z if steps else z[:, 0]
        t = f.mean + f.std * z
        if f.transform == "log1p":
            v = np.expm1(np.minimum(t, 700.0))
        elif f.transform in ("log", "tail_log_mean"):
            v = np.exp(np.minimum(t, 700.0))
        elif f.transform in ("sin", "cos") or f.transform in HISTORY_TRANSFORMS or f.transform == "context_z" \
                or f.transform in TAIL_TRANSFORMS:
            a = lo if np.isfinite(lo) else -100.0
            c = hi if np.isfinite(hi) else a + 200.0
            level = rng.uniform(a, c, size=(n, 1) if steps else n)
            v = level * (1.0 + 0.1 * rng.normal(size=shape)) if f.transform != "sin" and f.transform != "cos" \
                else np.broadcast_to(level, shape) + rng.normal(size=shape)
        else:
            v = t
        columns[field.name] = np.clip(v, lo, hi).astype(np.float64)
    return columns


def concat_columns(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = parts[0].keys()
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in keys}
