"""Request bytes to raw columns: the request deserializer of each inference RPC (and, `Decoder.serializer`, the
response serializer: encode.py builds the native path's response bytes).

Two decoders make the same forms (`Bandwidth`, `Compression`, `Anomaly`, `Latency`, each holding `Samples` or
`Queries` columns): `native`, the Rust extension `dwcp_inference_native` (prost; no Python object per sample),
and `python`, the protobuf runtime and a walk over its messages. Neither judges a value: convert.py and the
feature layer do, once, over the columns, so both decoders give the same answers and the same messages by
construction. Bytes that prost refuses are handed to the protobuf runtime, which decides: they are either not a
serialized request (`Undecodable`, INVALID_ARGUMENT) or something the runtime keeps (a known field sent with another
wire type is an unknown field to it), decoded on the python path. Requests with entries in a `custom` map take the
python path too (the runtime drops a map entry holding an unknown field; prost keeps it)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from google.protobuf.message import DecodeError, Message

from dwcp_inference.api import inference_pb2 as pb

from . import encode
from .convert import CONSENSUS_LABELS, CONSENSUS_NUMBERS, NETWORK_FIELDS, NODE_FIELDS

NATIVE_MODULE = "dwcp_inference_native"
CHOICES = ("auto", "native", "python")


@dataclass(frozen=True)
class Undecodable:
    """Request bytes that are not a serialized message of the RPC's request type."""

    type_name: str


@dataclass(frozen=True)
class Encoded:
    """Request bytes as received: the event loop only receives; the worker thread decodes them (`parsed`).
    `native`: the extension, which also builds the response's bytes (encode.py)."""

    data: bytes
    parse: Callable[[bytes], Any]
    native: Any = None


def parsed(request: Any) -> Any:
    """Encoded request bytes decoded (columns, a message, or Undecodable); anything else as it is."""
    return request.parse(request.data) if isinstance(request, Encoded) else request


class Selector(NamedTuple):
    version: str = ""
    label: str = ""


@dataclass
class Samples:
    """B sequences of one sample type as columns: every sample's numbers in order ([N, F], F = `fields`), each
    sequence's length, the `custom` map's entries by key (present [N] and value [N]), string fields interned
    (vocabulary, codes [N]), and the timestamp of each sequence's last sample (network samples)."""

    fields: tuple[str, ...]
    numbers: np.ndarray
    lengths: np.ndarray
    custom: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    labels: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)
    last_timestamps: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # has, seconds, nanos

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.lengths) - self.lengths

    def numeric(self, rows: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The numbers of each of `names` (plain fields) at `rows` (an index array, or slices for one window): views
        of one gather, each of the shape `rows` selects."""
        numbers, index = self.numbers[rows], self.fields.index
        return {name: numbers[..., index(name)] for name in names}

    def strings(self, name: str, rows: np.ndarray) -> np.ndarray:
        vocabulary, codes = self.labels[name]
        return np.array(vocabulary, dtype=str)[codes[rows]]

    def last_times(self, default: float) -> np.ndarray:
        """Each sequence's last sample's timestamp in seconds, or `default` without one: [B] float64."""
        has, seconds, nanos = self.last_timestamps
        if len(has) == 1:  # a single call: the same arithmetic in Python floats
            return np.array([float(seconds[0]) + float(nanos[0]) / 1e9 if has[0] else default], dtype=np.float64)
        return np.where(has, seconds.astype(np.float64) + nanos.astype(np.float64) / 1e9, default)

    def take(self, rows: np.ndarray, lengths: np.ndarray) -> "Samples":
        """The samples at `rows`, as sequences of `lengths`."""
        custom = {k: (present[rows], values[rows]) for k, (present, values) in self.custom.items()}
        labels = {k: (vocabulary, codes[rows]) for k, (vocabulary, codes) in self.labels.items()}
        return Samples(self.fields, self.numbers[rows], lengths, custom, labels)

    def concat(first, second: "Samples") -> "Samples":
        """Both sets of rows (same type) in one Samples, these first; lengths are these then second's."""
        return concat_samples([first, second])


def concat_samples(parts: Sequence[Samples]) -> Samples:
    """The sequences of every part (same sample type) in one Samples, in order, every column kept: numbers,
    lengths, custom entries (absent where a part has none), labels (vocabularies merged) and last timestamps."""
    sizes = [len(p.numbers) for p in parts]
    custom = {}
    for key in dict.fromkeys(k for p in parts for k in p.custom):
        pairs = [p.custom.get(key, (np.zeros(n, bool), np.zeros(n))) for p, n in zip(parts, sizes)]
        custom[key] = np.concatenate([present for present, _ in pairs]), np.concatenate([v for _, v in pairs])
    labels = {}
    for name in parts[0].labels:
        vocabulary = list(dict.fromkeys(word for p in parts for word in p.labels[name][0]))
        index = {word: i for i, word in enumerate(vocabulary)}
        codes = [np.array([index[w] for w in p.labels[name][0]], dtype=np.int32)[p.labels[name][1]] for p in parts]
        labels[name] = vocabulary, np.concatenate(codes)
    out = Samples(parts[0].fields, np.concatenate([p.numbers for p in parts]),
                  np.concatenate([p.lengths for p in parts]), custom, labels)
    if all(p.last_timestamps is not None for p in parts):
        out.last_timestamps = tuple(np.concatenate(column) for column in zip(*(p.last_timestamps for p in parts)))
    return out


@dataclass
class Queries:
    """SelectCompression items as columns; the payload samples stay bytes (their traits are computed in Python)."""

    link: np.ndarray            # [B, 3] float64: throughput_mbps, rtt_ms, packet_loss
    link_type: np.ndarray       # [B] int32
    size_bytes: np.ndarray      # [B] int64
    samples: list[bytes]
    entropy: np.ndarray         # [B] float64, meaningful where has_entropy
    has_entropy: np.ndarray     # [B] bool
    ratio: np.ndarray
    has_ratio: np.ndarray

    def __len__(self) -> int:
        return len(self.link_type)


def concat_queries(parts: Sequence[Queries]) -> Queries:
    """The queries of every part in one Queries, in order."""
    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    return Queries(cat("link"), cat("link_type"), cat("size_bytes"), [s for p in parts for s in p.samples],
                   cat("entropy"), cat("has_entropy"), cat("ratio"), cat("has_ratio"))


@dataclass
class Bandwidth:
    model: Selector
    histories: Samples


@dataclass
class Compression:
    model: Selector
    queries: Queries


@dataclass
class Anomaly:
    model: Selector
    has_metrics: bool
    metrics: Samples            # one sample per item
    histories: Samples


@dataclass
class Latency:
    model: Selector
    windows: Samples


# ------------------------------------------------------------------ the python decoder: messages to columns

def _selector(message: Message) -> Selector:
    return Selector(message.model.version, message.model.label)


def _custom(samples: Sequence, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    custom: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    maps = list(map(attrgetter("custom"), samples))
    if not any(maps):  # the common case: no custom metrics at all
        return custom
    for row, m in enumerate(maps):
        for key, value in m.items():
            present, values = custom.setdefault(key, (np.zeros(n, bool), np.zeros(n)))
            present[row], values[row] = True, value
    return custom


def _samples(seqs: Sequence[Sequence], fields: tuple[str, ...], labels: tuple[str, ...] = (),
             custom: bool = False, timestamps: bool = False) -> Samples:
    flat = [x for s in seqs for x in s]
    get = attrgetter(*fields)
    numbers = np.array([get(x) for x in flat], dtype=np.float64).reshape(len(flat), len(fields))
    out = Samples(fields, numbers, np.array([len(s) for s in seqs], dtype=np.int64))
    if custom:
        out.custom = _custom(flat, len(flat))
    for name in labels:  # interned in order of first appearance, as the extension does
        values = list(map(attrgetter(name), flat))
        index = {v: i for i, v in enumerate(dict.fromkeys(values))}
        out.labels[name] = list(index), np.fromiter(map(index.__getitem__, values), np.int32, len(values))
    if timestamps:
        last = [s[-1].timestamp if len(s) and s[-1].HasField("timestamp") else None for s in seqs]
        out.last_timestamps = (np.array([t is not None for t in last], dtype=bool),
                               np.array([t.seconds if t else 0 for t in last], dtype=np.int64),
                               np.array([t.nanos if t else 0 for t in last], dtype=np.int32))
    return out


def _queries(items: Sequence[tuple[pb.LinkState, pb.PayloadTraits]]) -> Queries:
    links = [link for link, _ in items]
    payloads = [payload for _, payload in items]
    return Queries(
        np.array([(x.throughput_mbps, x.rtt_ms, x.packet_loss) for x in links], dtype=np.float64).reshape(-1, 3),
        np.array([x.link_type for x in links], dtype=np.int32),
        np.array([p.size_bytes for p in payloads], dtype=np.int64),
        [p.sample for p in payloads],
        np.array([p.entropy_bits_per_byte for p in payloads], dtype=np.float64),
        np.array([p.HasField("entropy_bits_per_byte") for p in payloads], dtype=bool),
        np.array([p.recent_compression_ratio for p in payloads], dtype=np.float64),
        np.array([p.HasField("recent_compression_ratio") for p in payloads], dtype=bool))


def _network(histories: Sequence[pb.LinkHistory]) -> Samples:
    return _samples([h.samples for h in histories], NETWORK_FIELDS, timestamps=True)


def _nodes(seqs: Sequence[Sequence[pb.NodeMetrics]]) -> Samples:
    return _samples(seqs, NODE_FIELDS, custom=True)


def _consensus(windows: Sequence[pb.ConsensusWindow]) -> Samples:
    return _samples([w.samples for w in windows], CONSENSUS_NUMBERS, CONSENSUS_LABELS, custom=True)


FROM_MESSAGE: dict[type, Callable[[Any], Any]] = {
    pb.PredictBandwidthRequest: lambda r: Bandwidth(_selector(r), _network([r.history])),
    pb.PredictBandwidthBatchRequest: lambda r: Bandwidth(_selector(r), _network(r.histories)),
    pb.SelectCompressionRequest: lambda r: Compression(_selector(r), _queries([(r.link, r.payload)])),
    pb.SelectCompressionBatchRequest: lambda r: Compression(_selector(r),
                                                            _queries([(q.link, q.payload) for q in r.queries])),
    pb.DetectAnomalyRequest: lambda r: Anomaly(_selector(r), r.HasField("metrics"), _nodes([[r.metrics]]),
                                               _nodes([r.history.samples])),
    pb.DetectAnomalyBatchRequest: lambda r: Anomaly(_selector(r), True, _nodes([[m] for m in r.metrics]),
                                                    _nodes([h.samples for h in r.histories])),
    pb.DetectHighLatencyRequest: lambda r: Latency(_selector(r), _consensus([r.window])),
    pb.DetectHighLatencyBatchRequest: lambda r: Latency(_selector(r), _consensus(r.windows)),
}


def from_message(request: Any) -> Any:
    """A request message in its decoded form; anything else (already decoded, ReportOutcome's) as it is."""
    convert_message = FROM_MESSAGE.get(type(request))
    return convert_message(request) if convert_message else request


# ------------------------------------------------------------------ the native decoder: its buffers to columns

def _native_samples(fields: tuple[str, ...], labels: tuple[str, ...], buffers: tuple,
                    timestamps: bool = False) -> Samples:
    """No custom entries: the extension leaves requests with any to the python path."""
    numbers, lengths, interned, (has, seconds, nanos) = buffers
    numbers = np.frombuffer(numbers, dtype=np.float64).reshape(-1, len(fields))
    out = Samples(fields, numbers, np.frombuffer(lengths, dtype=np.int64))
    for name, (vocabulary, codes) in zip(labels, interned):
        out.labels[name] = vocabulary, np.frombuffer(codes, dtype=np.int32)
    if timestamps:
        out.last_timestamps = (np.frombuffer(has, dtype=np.uint8).astype(bool), np.frombuffer(seconds, dtype=np.int64),
                               np.frombuffer(nanos, dtype=np.int32))
    return out


def _native_queries(buffers: tuple) -> Queries:
    link, kind, size, samples, entropy, has_entropy, ratio, has_ratio = buffers
    return Queries(np.frombuffer(link, dtype=np.float64).reshape(-1, 3), np.frombuffer(kind, dtype=np.int32),
                   np.frombuffer(size, dtype=np.int64), samples, np.frombuffer(entropy, dtype=np.float64),
                   np.frombuffer(has_entropy, dtype=np.uint8).astype(bool), np.frombuffer(ratio, dtype=np.float64),
                   np.frombuffer(has_ratio, dtype=np.uint8).astype(bool))


def _net(b: tuple) -> Samples:
    return _native_samples(NETWORK_FIELDS, (), b, timestamps=True)


def _node(b: tuple) -> Samples:
    return _native_samples(NODE_FIELDS, (), b)


def _cons(b: tuple) -> Samples:
    return _native_samples(CONSENSUS_NUMBERS, CONSENSUS_LABELS, b)


# request type -> (the native function's name, its tuple to the decoded form)
NATIVE: dict[type, tuple[str, Callable[[tuple], Any]]] = {
    pb.PredictBandwidthRequest: ("decode_predict_bandwidth", lambda t: Bandwidth(Selector(*t[0]), _net(t[1]))),
    pb.PredictBandwidthBatchRequest: ("decode_predict_bandwidth_batch",
                                      lambda t: Bandwidth(Selector(*t[0]), _net(t[1]))),
    pb.SelectCompressionRequest: ("decode_select_compression",
                                  lambda t: Compression(Selector(*t[0]), _native_queries(t[1]))),
    pb.SelectCompressionBatchRequest: ("decode_select_compression_batch",
                                       lambda t: Compression(Selector(*t[0]), _native_queries(t[1]))),
    pb.DetectAnomalyRequest: ("decode_detect_anomaly",
                              lambda t: Anomaly(Selector(*t[0]), t[1], _node(t[2]), _node(t[3]))),
    pb.DetectAnomalyBatchRequest: ("decode_detect_anomaly_batch",
                                   lambda t: Anomaly(Selector(*t[0]), t[1], _node(t[2]), _node(t[3]))),
    pb.DetectHighLatencyRequest: ("decode_detect_high_latency", lambda t: Latency(Selector(*t[0]), _cons(t[1]))),
    pb.DetectHighLatencyBatchRequest: ("decode_detect_high_latency_batch",
                                       lambda t: Latency(Selector(*t[0]), _cons(t[1]))),
}


# ------------------------------------------------------------------ the deserializers

def python_deserializer(cls: type) -> Callable[[bytes], Any]:
    """The message, or Undecodable; the servicer turns the message into columns (`from_message`) in its worker."""
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError:
            return Undecodable(cls.DESCRIPTOR.full_name)

    return parse


def native_deserializer(cls: type, module: Any) -> Callable[[bytes], Any]:
    if cls not in NATIVE:  # ReportOutcome: a small message, not worth a native form
        return python_deserializer(cls)
    name, build = NATIVE[cls]
    decode_native = getattr(module, name)
    fallback = python_deserializer(cls)

    def parse(data: bytes) -> Any:
        buffers = decode_native(data)
        return fallback(data) if buffers is None else build(buffers)

    return lambda data: Encoded(data, parse, module)


def native_module() -> Any | None:
    try:
        return importlib.import_module(NATIVE_MODULE)
    except ImportError:
        return None


@dataclass(frozen=True)
class Decoder:
    """The chosen decoder: its name (native or python) and why, and each request type's deserializer."""

    name: str
    reason: str
    module: Any = None

    def deserializer(self, cls: type) -> Callable[[bytes], Any]:
        return native_deserializer(cls, self.module) if self.name == "native" else python_deserializer(cls)

    def serializer(self, cls: type) -> Callable[[Any], bytes]:
        """The response serializer: the native path's bytes as they are, a message serialized (encode.py)."""
        return encode.serializer(cls)


def choose(setting: str = "auto") -> Decoder:
    """auto: native when the extension imports, else python; native: the extension or an error; python."""
    if setting not in CHOICES:
        raise ValueError(f"--decoder: expected one of {list(CHOICES)}, got {setting!r}")
    if setting == "python":
        return Decoder("python", "chosen")
    module = native_module()
    if module is not None:
        return Decoder("native", "chosen" if setting == "native" else "auto: the extension is installed", module)
    if setting == "native":
        raise ValueError(f"--decoder native: the extension {NATIVE_MODULE} is not installed "
                         "(pip install ./native needs cargo)")
    return Decoder("python", f"auto: {NATIVE_MODULE} is not installed (pip install ./native needs cargo)")
