"""Each model's contract, declared once: the raw fields callers send (where in the request they come from, unit,
valid range, kind, whether they may be missing), the features training uses by default, the targets, and what the
answer decides. The server checks requests against it, the fuzzer mutates from it, training and the importer make
new versions with it, and the Go client's flat layouts are generated from it (`python -m dwcp_inference.contracts go`,
`make contracts`; contracts/go.py).

A version's metadata keeps carrying its own raw_fields: older versions keep serving as they were made; the contract
is what new versions are trained and imported with.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..features import Feature, RawField, Target

NUMBER, INTEGER, CATEGORY = "number", "integer", "category"
LINK_TYPES = ("dc", "metro", "wan", "edge")
NETWORK_TIERS = ("tier1", "tier2", "tier3")
DWCP_MODES = ("datacenter", "internet", "hybrid")
CONSENSUS_TYPES = ("raft", "pbft", "gossip")


@dataclass(frozen=True)
class Field:
    """One raw field. `path` is where it sits in a request item (the message named by the model's `item`), "[]"
    marking a repeated level; `message` is the proto message that holds it. The range [min, max] is closed at each
    end marked inclusive (features.validate_raw enforces closed ranges: every field today is inclusive at both)."""

    name: str
    path: str
    message: str
    unit: str
    kind: str = NUMBER  # number, integer (an integer-typed proto field), or category (a string of `vocabulary`)
    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True
    vocabulary: tuple[str, ...] = ()
    optional: bool = False  # may be missing from the request (then derived; see `note`)
    note: str = ""

    def raw_field(self) -> RawField:
        """The metadata's form (what features.validate_raw checks)."""
        if self.kind == CATEGORY:
            return RawField(self.name, vocabulary=self.vocabulary)
        if not (self.min_inclusive and self.max_inclusive):
            raise ValueError(f"{self.name}: an open range end, which the feature layer cannot check (closed only)")
        return RawField(self.name, self.min, self.max)


@dataclass(frozen=True)
class ModelContract:
    name: str
    rpc: str
    item: tuple[str, str]  # a request item's path in the single RPC and in the batch RPC
    fields: tuple[Field, ...]
    features: tuple[Feature, ...]  # the default feature list training uses (before scaling is fitted)
    targets: tuple[Target, ...]
    decision: tuple[str, ...]  # the answer fields the decision gives (codec choices: codec-level)
    window: int = 0  # samples per item the default model reads (0: one per item)
    flat: tuple[str, ...] = ()  # numeric fields in the order of a flat feature slice (the Go ModelInferenceClient)
    # Targets a version may have beyond `decision` that the answer carries when the version has all of them (and
    # its calibration, decision.interval_coverage): the bandwidth interval [p10, p90] (docs/protos.md).
    interval: tuple[str, ...] = ()

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no raw field {name!r}")

    def raw_fields(self) -> list[RawField]:
        return [f.raw_field() for f in self.fields]

    @property
    def numbers(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind != CATEGORY)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind == CATEGORY)

    @property
    def flat_names(self) -> tuple[str, ...]:
        """The numeric fields in the order of a flat slice (`flat`, else the declaration order)."""
        return self.flat or self.numbers

    @property
    def flat_fields(self) -> tuple[Field, ...]:
        return tuple(self.field(n) for n in self.flat_names)

    def path(self, name: str, batch: bool = False) -> str:
        """The field's full path in the request, e.g. histories[].samples[].bandwidth_mbps."""
        item = self.item[1] if batch else self.item[0]
        return ".".join(p for p in (item, self.field(name).path) if p)


def at(path: str, *indices: int) -> str:
    """A path with its "[]" filled in order: at("history.samples[].x", 3) == "history.samples[3].x"."""
    for i in indices:
        path = path.replace("[]", f"[{i}]", 1)
    return path


def _network(name: str, unit: str, lo: float, hi: float, kind: str = NUMBER) -> Field:
    return Field(name, f"samples[].{name}", "NetworkSample", unit, kind, lo, hi)


BANDWIDTH = ModelContract(
    name="bandwidth_predictor", rpc="PredictBandwidth", item=("history", "histories[]"), window=24,
    fields=(_network("bandwidth_mbps", "Mbit/s", 0.0, 1e7), _network("latency_ms", "ms", 0.0, 1e6),
            _network("packet_loss", "fraction", 0.0, 1.0), _network("jitter_ms", "ms", 0.0, 1e6),
            _network("time_of_day", "hour", 0, 23, INTEGER), _network("day_of_week", "day, 0 = Sunday", 0, 6, INTEGER)),
    features=(Feature("bandwidth", "bandwidth_mbps", "log1p"), Feature("latency", "latency_ms", "log1p"),
              Feature("loss", "packet_loss", "log"), Feature("jitter", "jitter_ms", "log1p"),
              Feature("tod_sin", "time_of_day", "sin", period=24), Feature("tod_cos", "time_of_day", "cos", period=24),
              Feature("dow_sin", "day_of_week", "sin", period=7), Feature("dow_cos", "day_of_week", "cos", period=7)),
    targets=(Target("bandwidth_mbps", "log1p", min=0.0), Target("latency_ms", "log1p", min=0.0),
             Target("packet_loss", "log", min=0.0, max=1.0), Target("jitter_ms", "log1p", min=0.0)),
    decision=("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms"),
    interval=("bandwidth_mbps_p10", "bandwidth_mbps_p90"))  # answered as predicted_bandwidth_p10/_p90_mbps

CODEC_CHOICES = (("none", 0), ("lz4", 0), ("zstd", 1), ("zstd", 3), ("zstd", 9), ("zstd", 19))

COMPRESSION = ModelContract(
    name="compression_selector", rpc="SelectCompression", item=("", "queries[]"),
    fields=(Field("throughput_mbps", "link.throughput_mbps", "LinkState", "Mbit/s", NUMBER, 0.0, 1e7),
            Field("rtt_ms", "link.rtt_ms", "LinkState", "ms", NUMBER, 0.0, 1e5),
            Field("packet_loss", "link.packet_loss", "LinkState", "fraction", NUMBER, 0.0, 1.0),
            Field("link_type", "link.link_type", "LinkState", "LinkType", CATEGORY, vocabulary=LINK_TYPES),
            Field("size_bytes", "payload.size_bytes", "PayloadTraits", "bytes", INTEGER, 1.0, 1e13),
            Field("payload_entropy", "payload.entropy_bits_per_byte", "PayloadTraits", "bits per byte", NUMBER,
                  0.0, 8.0, optional=True, note="computed from payload.sample when that is sent"),
            Field("payload_ratio", "payload.recent_compression_ratio", "PayloadTraits", "compressed / original",
                  NUMBER, 0.0, 2.0, optional=True, note="zlib level 1 on payload.sample when that is sent")),
    features=(Feature("throughput", "throughput_mbps", "log1p"), Feature("rtt", "rtt_ms", "log1p"),
              Feature("loss", "packet_loss", "log"),
              Feature("link_type", "link_type", "one_hot", vocabulary=LINK_TYPES),
              Feature("size", "size_bytes", "log1p"), Feature("entropy", "payload_entropy"),
              Feature("ratio", "payload_ratio")),
    targets=(),
    decision=tuple(f"{codec}-{level}" for codec, level in CODEC_CHOICES),
    flat=("throughput_mbps", "rtt_ms", "packet_loss", "link_type", "size_bytes", "payload_entropy", "payload_ratio"))

_FRACTIONS = ("error_rate", "timeout_rate", "packet_loss_rate", "cpu_usage", "memory_usage")
_NODE = (("error_rate", "fraction of requests"), ("timeout_rate", "fraction of requests"), ("latency_p50_ms", "ms"),
         ("latency_p99_ms", "ms"), ("sla_violations", "count per interval"),
         ("connection_failures", "count per interval"), ("packet_loss_rate", "fraction"), ("cpu_usage", "fraction"),
         ("memory_usage", "fraction"), ("disk_io_mbps", "MB/s"))

RELIABILITY = ModelContract(
    name="reliability_detector", rpc="DetectAnomaly", item=("metrics", "metrics[]"),
    fields=tuple(Field(n, n, "NodeMetrics", unit, NUMBER, 0.0, 1.0 if n in _FRACTIONS else 1e9) for n, unit in _NODE),
    features=tuple(Feature(n, n) for n, _ in _NODE),  # trees need no scaling
    targets=(), decision=("is_anomaly", "score", "severity", "contributions"))

_COUNTS = ("queue_depth", "proposals_pending", "proposals_committed", "leader_changes", "quorum_size",
           "active_nodes")
_LATENCIES = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")


def _consensus(name: str, unit: str, kind: str = NUMBER, vocabulary: tuple[str, ...] = ()) -> Field:
    lo, hi = (None, None) if vocabulary else (0.0, 1e9)
    return Field(name, f"samples[].{name}", "ConsensusSample", unit, kind, lo, hi, vocabulary=vocabulary)


CONSENSUS = ModelContract(
    name="consensus_latency", rpc="DetectHighLatency", item=("window", "windows[]"), window=20,
    fields=(*(_consensus(n, "count") for n in _COUNTS), *(_consensus(n, "ms") for n in _LATENCIES),
            _consensus("network_tier", "", CATEGORY, NETWORK_TIERS), _consensus("dwcp_mode", "", CATEGORY, DWCP_MODES),
            _consensus("consensus_type", "", CATEGORY, CONSENSUS_TYPES)),
    features=(*(Feature(f, f, "log1p") for f in (*_COUNTS, *_LATENCIES)),
              Feature("network_tier", "network_tier", "one_hot", vocabulary=NETWORK_TIERS),
              Feature("dwcp_mode", "dwcp_mode", "one_hot", vocabulary=DWCP_MODES),
              Feature("consensus_type", "consensus_type", "one_hot", vocabulary=CONSENSUS_TYPES)),
    targets=(), decision=("is_high_latency", "reconstruction_error", "threshold", "feature_errors"),
    # ConsensusSample's order (the deployment's labels travel apart, in the Go ConsensusDeployment)
    flat=("queue_depth", "proposals_pending", "proposals_committed", *_LATENCIES, "leader_changes", "quorum_size",
          "active_nodes"))

CONTRACTS = {c.name: c for c in (BANDWIDTH, COMPRESSION, RELIABILITY, CONSENSUS)}


def contract(model: str) -> ModelContract:
    return CONTRACTS[model]
