"""Each model's Open Inference Protocol (V2) form: its input tensors (the raw fields a typed request carries, named
as the version's metadata names them, batch first), how they become the typed batch request, how the typed
response becomes output tensors, and how a typed field path in an error message names the V2 input and index.
No answer is computed here: v2.py hands the typed request to the typed servicer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from dwcp_inference.api import inference_pb2 as pb

from .decisions import interval_coverage
from .errors import InvalidInput, shown

CUSTOM = "custom."  # a raw field custom.<name> travels in the typed message's `custom` map
LABEL_PARAMETER = "label"  # ModelInferRequest.parameters["label"]: a version label (stable, canary, ...)


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size (the batch, the samples)
    required: bool = True

    @property
    def text(self) -> bool:
        return self.datatype == "BYTES"


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join("B" if k == 0 else "T" if d < 0 else str(d) for k, d in enumerate(shape)) + "]"


INTEGER_FIELDS = {"time_of_day": "INT32", "day_of_week": "INT32", "size_bytes": "INT64"}
INT_RANGE = {"INT32": (-2**31, 2**31 - 1), "INT64": (-2**63, 2**63 - 1)}


def _numbers(name: str, a: np.ndarray, datatype: str) -> np.ndarray:
    if a.dtype == object or a.dtype == bool:
        raise InvalidInput(f"input {name!r}: expected a numeric datatype (e.g. {datatype}), got "
                           f"{'BYTES' if a.dtype == object else 'BOOL'}")
    x = a.astype(np.float64)
    if datatype in INT_RANGE:
        lo, hi = INT_RANGE[datatype]
        bad = ~np.isfinite(x) | (x != np.floor(x)) | (x < lo) | (x > hi)
        if bad.any():
            at = tuple(int(k) for k in np.unravel_index(int(np.argmax(bad)), bad.shape))
            raise InvalidInput(f"input {name!r}{list(at)}: expected an integer ({datatype}), got {x[at]:g}")
        return a.astype(np.int64)
    return x


def _strings(name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype != object:
        raise InvalidInput(f"input {name!r}: expected BYTES (UTF-8 text), got a numeric datatype")
    flat = a.reshape(-1).tolist()
    try:
        return np.array([v.decode() for v in flat], dtype=object).reshape(a.shape)
    except UnicodeDecodeError:
        for k, v in enumerate(flat):
            try:
                v.decode()
            except UnicodeDecodeError:
                at = [int(d) for d in np.unravel_index(k, a.shape)]
                raise InvalidInput(f"input {name!r}{at}: expected UTF-8 text") from None
        raise


class ModelForm:
    """One model's V2 form. `inputs(meta)` lists the tensors of a version; `request` builds the typed batch request
    from checked columns; `outputs` lists the output tensors and `answer` fills them from the typed response."""

    model: str
    rpc: str            # the typed batch RPC that answers
    sequence_field: str  # the typed request's repeated field (the batch)

    def inputs(self, meta: Any) -> list[Tensor]:
        raise NotImplementedError

    def outputs(self, meta: Any) -> list[Tensor]:
        raise NotImplementedError

    def request(self, cols: dict[str, np.ndarray], selector: pb.ModelSelector) -> Any:
        raise NotImplementedError

    def answer(self, response: Any) -> dict[str, Any]:
        raise NotImplementedError

    # how the typed request names a V2 input: typed field path -> V2 input name; and words of its messages
    field_names: dict[str, str] = {}
    words: dict[str, str] = {}

    def columns(self, meta: Any, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The given tensors checked against the version's inputs (names, shapes, datatypes), as numbers (float64
        or int64) and strings."""
        specs = {t.name: t for t in self.inputs(meta)}
        for name in tensors:
            if name not in specs:
                raise InvalidInput(f"input {shown(name)}: not an input of {self.model} v{meta.version}; expected some "
                                   f"of {list(specs)}")
        cols, first = {}, None
        for spec in specs.values():
            a = tensors.get(spec.name)
            if a is None:
                if spec.required:
                    raise InvalidInput(f"input {spec.name!r}: missing ({self.model} v{meta.version} reads it)")
                continue
            if a.ndim != len(spec.shape):
                raise InvalidInput(f"input {spec.name!r}: expected shape {shape_text(spec.shape)}, got "
                                   f"{list(a.shape)}")
            if first is None:
                first = spec.name, a.shape
            elif a.shape != first[1]:
                raise InvalidInput(f"input {spec.name!r}: shape {list(a.shape)} differs from the shape of input "
                                   f"{first[0]!r}, {list(first[1])} (every input holds the same items"
                                   f"{' and samples' if len(spec.shape) > 1 else ''})")
            cols[spec.name] = _strings(spec.name, a) if spec.text else _numbers(spec.name, a, spec.datatype)
        return cols

    def first_input(self, meta: Any) -> str:
        return self.inputs(meta)[0].name

    def translate(self, message: str, meta: Any, samples: int) -> str:
        """A typed error message naming a typed field path, as the V2 input and index."""
        m = PATH.match(message)
        if not m:
            return message
        i, j, field, rest = m["i"], m["j"], m["field"], m["rest"]
        if m["seq"] == "metrics" and samples > 1:  # a windowed detector: the current interval is the last column
            j = str(samples - 1)
        for typed, name in self.words.items():
            rest = rest.replace(typed, name)
        if field is None:
            where = f"input {self.first_input(meta)!r}" + ("" if i is not None else " (the first dimension)")
        else:
            custom = re.fullmatch(r"custom\['(.*)'\]", field)
            name = CUSTOM + custom[1] if custom else self.field_names.get(field, field)
            where = f"input {name!r}"
        index = [k for k in (i, j) if k is not None]
        return f"{where}{'[' + ', '.join(index) + ']' if index else ''}: {rest}"


PATH = re.compile(r"^(?P<seq>histories|history|windows|window|queries|metrics)(?:\[(?P<i>\d+)\])?"
                  r"(?:\.samples(?:\[(?P<j>\d+)\])?)?(?:\.(?P<field>[^:]+))?: (?P<rest>.*)$", re.S)


def _raw_names(meta: Any, default: Sequence[str]) -> tuple[list[str], list[str]]:
    """The numeric and text raw fields a version reads."""
    fields = meta.raw_fields or []
    if not fields:
        return list(default), []
    return [f.name for f in fields if not f.vocabulary], [f.name for f in fields if f.vocabulary]


def _declared_first(reads: Sequence[str], known: Sequence[str]) -> list[str]:
    """The fields a version reads in its declared order, then the rest of the typed message's, in theirs."""
    return list(dict.fromkeys([*reads, *known]))


def _seconds(ts: Any) -> float:
    return ts.seconds + ts.nanos / 1e9


def _rows(cols: dict[str, np.ndarray]) -> Callable[[int], Iterator[dict[str, Any]]]:
    """[B, T] columns as `items(i)`: item i's T samples, each as the typed sample's keyword arguments (custom.<name>
    fields in its `custom` map)."""
    plain = [n for n in cols if not n.startswith(CUSTOM)]
    custom = [n for n in cols if n.startswith(CUSTOM)]
    keys = [n[len(CUSTOM):] for n in custom]
    lists = [cols[n].tolist() for n in plain]
    custom_lists = [cols[n].tolist() for n in custom]

    def items(i: int) -> Iterator[dict[str, Any]]:
        customs = zip(*(c[i] for c in custom_lists)) if custom else None
        for values in zip(*(c[i] for c in lists)):
            kw = dict(zip(plain, values))
            if customs is not None:
                kw["custom"] = dict(zip(keys, next(customs)))
            yield kw
    return items


def _fill(sequences: Any, cols: dict[str, np.ndarray]) -> None:
    """Add B typed sequences (a repeated field of messages with `samples`) from [B, T] columns; built in place:
    the constructors would copy each sample."""
    items = _rows(cols)
    for i in range(len(next(iter(cols.values())))):
        add = sequences.add().samples.add
        for kw in items(i):
            add(**kw)


def _ranked(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [list(r) for r in rows]


class Bandwidth(ModelForm):
    model, rpc, sequence_field = "bandwidth_predictor", "PredictBandwidthBatch", "histories"
    FIELDS = ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms", "time_of_day", "day_of_week")

    def inputs(self, meta):
        reads = [f.name for f in meta.raw_fields] or list(self.FIELDS)
        return [Tensor(f, INTEGER_FIELDS.get(f, "FP64"), (-1, -1), f in reads)
                for f in _declared_first(reads, self.FIELDS)]

    INTERVAL = ("predicted_bandwidth_p10_mbps", "predicted_bandwidth_p90_mbps")  # a version with quantiles only

    def outputs(self, meta):
        interval = self.INTERVAL if interval_coverage(meta) is not None else ()
        return [Tensor(n, "FP64", (-1,)) for n in ("predicted_bandwidth_mbps", "predicted_latency_ms",
                                                   "predicted_packet_loss", "predicted_jitter_ms", "confidence",
                                                   "valid_until", "prediction_time", *interval)] + [
            Tensor("prediction_id", "BYTES", (-1,))]

    def request(self, cols, selector):
        request = pb.PredictBandwidthBatchRequest(model=selector)
        _fill(request.histories, cols)
        return request

    def answer(self, response):
        p = response.predictions
        return {"predicted_bandwidth_mbps": [x.predicted_bandwidth_mbps for x in p],
                "predicted_latency_ms": [x.predicted_latency_ms for x in p],
                "predicted_packet_loss": [x.predicted_packet_loss for x in p],
                "predicted_jitter_ms": [x.predicted_jitter_ms for x in p],
                "confidence": [x.confidence for x in p],
                "valid_until": [_seconds(x.valid_until) for x in p],
                "prediction_time": [_seconds(x.prediction_time) for x in p],
                "prediction_id": [x.prediction_id for x in p],
                # outputs only of a version with quantiles (`outputs`), whose answers always carry them
                **{n: [getattr(x, n) for x in p] for n in self.INTERVAL}}


class Compression(ModelForm):
    model, rpc, sequence_field = "compression_selector", "SelectCompressionBatch", "queries"
    field_names = {"link.throughput_mbps": "throughput_mbps", "link.rtt_ms": "rtt_ms",
                   "link.packet_loss": "packet_loss", "link.link_type": "link_type",
                   "payload.size_bytes": "size_bytes", "payload": "payload_sample",
                   "payload.entropy_bits_per_byte": "payload_entropy",
                   "payload.recent_compression_ratio": "payload_ratio"}
    words = {"entropy_bits_per_byte": "payload_entropy", "recent_compression_ratio": "payload_ratio"}

    def inputs(self, meta):
        # payload_entropy and payload_ratio are raw fields, computed from payload_sample when that is sent instead
        tensors = {"throughput_mbps": Tensor("throughput_mbps", "FP64", (-1,)),
                   "rtt_ms": Tensor("rtt_ms", "FP64", (-1,)), "packet_loss": Tensor("packet_loss", "FP64", (-1,)),
                   "link_type": Tensor("link_type", "BYTES", (-1,)), "size_bytes": Tensor("size_bytes", "INT64", (-1,)),
                   "payload_entropy": Tensor("payload_entropy", "FP64", (-1,), False),
                   "payload_ratio": Tensor("payload_ratio", "FP64", (-1,), False),
                   "payload_sample": Tensor("payload_sample", "BYTES", (-1,), False)}
        return [tensors[n] for n in _declared_first([f.name for f in meta.raw_fields if f.name in tensors],
                                                     list(tensors))]

    def outputs(self, meta):
        return [Tensor("codec", "BYTES", (-1,)), Tensor("level", "INT32", (-1,)), Tensor("score", "FP64", (-1,)),
                Tensor("scores_codec", "BYTES", (-1, -1)), Tensor("scores_level", "INT32", (-1, -1)),
                Tensor("scores", "FP64", (-1, -1)), Tensor("prediction_id", "BYTES", (-1,))]

    def columns(self, meta, tensors):
        if "payload_sample" in tensors and tensors["payload_sample"].dtype == object:  # bytes, not text
            sample = tensors.pop("payload_sample")
            cols = super().columns(meta, tensors)
            if sample.ndim != 1 or len(sample) != len(cols["throughput_mbps"]):
                raise InvalidInput(f"input 'payload_sample': expected shape [B] like input 'throughput_mbps', "
                                   f"got {list(sample.shape)}")
            cols["payload_sample"] = sample
            return cols
        return super().columns(meta, tensors)

    def request(self, cols, selector):
        vocabulary = {name[len("LINK_TYPE_"):].lower(): value for name, value in pb.LinkType.items() if value}
        queries = []
        for i, link_type in enumerate(cols["link_type"].tolist()):
            if link_type not in vocabulary:
                raise InvalidInput(f"input 'link_type'[{i}]: expected one of {list(vocabulary)}, got "
                                   f"{shown(link_type)}")
            payload = pb.PayloadTraits(size_bytes=int(cols["size_bytes"][i]))
            if "payload_sample" in cols:
                payload.sample = cols["payload_sample"][i]
            if "payload_entropy" in cols:
                payload.entropy_bits_per_byte = float(cols["payload_entropy"][i])
            if "payload_ratio" in cols:
                payload.recent_compression_ratio = float(cols["payload_ratio"][i])
            link = pb.LinkState(throughput_mbps=float(cols["throughput_mbps"][i]), rtt_ms=float(cols["rtt_ms"][i]),
                                packet_loss=float(cols["packet_loss"][i]), link_type=vocabulary[link_type])
            queries.append(pb.CompressionQuery(link=link, payload=payload))
        return pb.SelectCompressionBatchRequest(queries=queries, model=selector)

    def answer(self, response):
        d = response.decisions

        def codec(c: int) -> str:
            return pb.Codec.Name(c)[len("CODEC_"):].lower()

        return {"codec": [codec(x.choice.codec) for x in d], "level": [x.choice.level for x in d],
                "score": [x.choice.score for x in d],
                "scores_codec": [[codec(s.codec) for s in x.scores] for x in d],
                "scores_level": [[s.level for s in x.scores] for x in d],
                "scores": [[s.score for s in x.scores] for x in d],
                "prediction_id": [x.prediction_id for x in d]}


class Anomaly(ModelForm):
    model, rpc, sequence_field = "reliability_detector", "DetectAnomalyBatch", "metrics"
    FIELDS = ("error_rate", "timeout_rate", "latency_p50_ms", "latency_p99_ms", "sla_violations",
              "connection_failures", "packet_loss_rate", "cpu_usage", "memory_usage", "disk_io_mbps")

    @staticmethod
    def windowed(meta) -> bool:
        return meta.window > 1

    def inputs(self, meta):
        reads = _raw_names(meta, self.FIELDS)[0]
        shape = (-1, -1) if self.windowed(meta) else (-1,)
        return [Tensor(f, "FP64", shape, f in reads) for f in _declared_first(reads, self.FIELDS)]

    def outputs(self, meta):
        return [Tensor("is_anomaly", "BOOL", (-1,)), Tensor("score", "FP64", (-1,)),
                Tensor("threshold", "FP64", (-1,)), Tensor("severity", "BYTES", (-1,)),
                Tensor("contribution_feature", "BYTES", (-1, -1)), Tensor("contribution_value", "FP64", (-1, -1)),
                Tensor("contribution_expected", "FP64", (-1, -1)),
                Tensor("contribution_deviation", "FP64", (-1, -1)), Tensor("prediction_id", "BYTES", (-1,))]

    def request(self, cols, selector):
        request = pb.DetectAnomalyBatchRequest(model=selector)
        if next(iter(cols.values())).ndim == 1:
            items = _rows({n: c[:, None] for n, c in cols.items()})
            for i in range(len(next(iter(cols.values())))):
                request.metrics.add(**next(items(i)))
            return request
        # the last column is the current interval, the others its history
        _fill(request.histories, {n: c[:, :-1] for n, c in cols.items()})
        items = _rows({n: c[:, -1:] for n, c in cols.items()})
        for i in range(len(next(iter(cols.values())))):
            request.metrics.add(**next(items(i)))
        return request

    def answer(self, response):
        v = response.verdicts
        return {"is_anomaly": [x.is_anomaly for x in v], "score": [x.score for x in v],
                "threshold": [x.threshold for x in v],
                "severity": [pb.Severity.Name(x.severity)[len("SEVERITY_"):].lower() for x in v],
                "contribution_feature": [[c.feature for c in x.contributions] for x in v],
                "contribution_value": [[c.value for c in x.contributions] for x in v],
                "contribution_expected": [[c.expected for c in x.contributions] for x in v],
                "contribution_deviation": [[c.deviation for c in x.contributions] for x in v],
                "prediction_id": [x.prediction_id for x in v]}


class Latency(ModelForm):
    model, rpc, sequence_field = "consensus_latency", "DetectHighLatencyBatch", "windows"
    NUMBERS = ("queue_depth", "proposals_pending", "proposals_committed", "latency_p50_ms", "latency_p95_ms",
               "latency_p99_ms", "leader_changes", "quorum_size", "active_nodes")
    LABELS = ("network_tier", "dwcp_mode", "consensus_type")

    def inputs(self, meta):
        reads = [f.name for f in meta.raw_fields] or [*self.NUMBERS, *self.LABELS]
        return [Tensor(f, "BYTES" if f in self.LABELS else "FP64", (-1, -1), f in reads)
                for f in _declared_first(reads, [*self.NUMBERS, *self.LABELS])]

    def outputs(self, meta):
        return [Tensor("is_high_latency", "BOOL", (-1,)), Tensor("reconstruction_error", "FP64", (-1,)),
                Tensor("threshold", "FP64", (-1,)), Tensor("feature_error_names", "BYTES", (-1, -1)),
                Tensor("feature_errors", "FP64", (-1, -1)), Tensor("prediction_id", "BYTES", (-1,))]

    def request(self, cols, selector):
        request = pb.DetectHighLatencyBatchRequest(model=selector)
        _fill(request.windows, cols)
        return request

    def answer(self, response):
        v = response.verdicts
        return {"is_high_latency": [x.is_high_latency for x in v],
                "reconstruction_error": [x.reconstruction_error for x in v], "threshold": [x.threshold for x in v],
                "feature_error_names": [[e.feature for e in x.feature_errors] for x in v],
                "feature_errors": [[e.error for e in x.feature_errors] for x in v],
                "prediction_id": [x.prediction_id for x in v]}


FORMS: dict[str, ModelForm] = {f.model: f for f in (Bandwidth(), Compression(), Anomaly(), Latency())}
