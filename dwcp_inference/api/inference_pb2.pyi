import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINK_TYPE_UNSPECIFIED: _ClassVar[LinkType]
    LINK_TYPE_DC: _ClassVar[LinkType]
    LINK_TYPE_METRO: _ClassVar[LinkType]
    LINK_TYPE_WAN: _ClassVar[LinkType]
    LINK_TYPE_EDGE: _ClassVar[LinkType]

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_NONE: _ClassVar[Codec]
    CODEC_LZ4: _ClassVar[Codec]
    CODEC_ZSTD: _ClassVar[Codec]
    CODEC_BROTLI: _ClassVar[Codec]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]
LINK_TYPE_UNSPECIFIED: LinkType
LINK_TYPE_DC: LinkType
LINK_TYPE_METRO: LinkType
LINK_TYPE_WAN: LinkType
LINK_TYPE_EDGE: LinkType
CODEC_UNSPECIFIED: Codec
CODEC_NONE: Codec
CODEC_LZ4: Codec
CODEC_ZSTD: Codec
CODEC_BROTLI: Codec
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_CRITICAL: Severity

class ModelSelector(_message.Message):
    __slots__ = ("version", "label")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    version: str
    label: str
    def __init__(self, version: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class NetworkSample(_message.Message):
    __slots__ = ("timestamp", "bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms", "time_of_day", "day_of_week", "node_id", "peer_id")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PACKET_LOSS_FIELD_NUMBER: _ClassVar[int]
    JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_OF_DAY_FIELD_NUMBER: _ClassVar[int]
    DAY_OF_WEEK_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    bandwidth_mbps: float
    latency_ms: float
    packet_loss: float
    jitter_ms: float
    time_of_day: int
    day_of_week: int
    node_id: str
    peer_id: str
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bandwidth_mbps: _Optional[float] = ..., latency_ms: _Optional[float] = ..., packet_loss: _Optional[float] = ..., jitter_ms: _Optional[float] = ..., time_of_day: _Optional[int] = ..., day_of_week: _Optional[int] = ..., node_id: _Optional[str] = ..., peer_id: _Optional[str] = ...) -> None: ...

class LinkHistory(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[NetworkSample]
    def __init__(self, samples: _Optional[_Iterable[_Union[NetworkSample, _Mapping]]] = ...) -> None: ...

class PredictBandwidthRequest(_message.Message):
    __slots__ = ("history", "model")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    history: LinkHistory
    model: ModelSelector
    def __init__(self, history: _Optional[_Union[LinkHistory, _Mapping]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ...) -> None: ...

class BandwidthPrediction(_message.Message):
    __slots__ = ("predicted_bandwidth_mbps", "predicted_latency_ms", "predicted_packet_loss", "predicted_jitter_ms", "confidence", "valid_until", "prediction_time", "prediction_id", "predicted_bandwidth_p10_mbps", "predicted_bandwidth_p90_mbps")
    PREDICTED_BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PACKET_LOSS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TIME_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_BANDWIDTH_P10_MBPS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_BANDWIDTH_P90_MBPS_FIELD_NUMBER: _ClassVar[int]
    predicted_bandwidth_mbps: float
    predicted_latency_ms: float
    predicted_packet_loss: float
    predicted_jitter_ms: float
    confidence: float
    valid_until: _timestamp_pb2.Timestamp
    prediction_time: _timestamp_pb2.Timestamp
    prediction_id: str
    predicted_bandwidth_p10_mbps: float
    predicted_bandwidth_p90_mbps: float
    def __init__(self, predicted_bandwidth_mbps: _Optional[float] = ..., predicted_latency_ms: _Optional[float] = ..., predicted_packet_loss: _Optional[float] = ..., predicted_jitter_ms: _Optional[float] = ..., confidence: _Optional[float] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., prediction_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., prediction_id: _Optional[str] = ..., predicted_bandwidth_p10_mbps: _Optional[float] = ..., predicted_bandwidth_p90_mbps: _Optional[float] = ...) -> None: ...

class PredictBandwidthResponse(_message.Message):
    __slots__ = ("prediction", "model")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    prediction: BandwidthPrediction
    model: ModelRef
    def __init__(self, prediction: _Optional[_Union[BandwidthPrediction, _Mapping]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class PredictBandwidthBatchRequest(_message.Message):
    __slots__ = ("histories", "model")
    HISTORIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    histories: _containers.RepeatedCompositeFieldContainer[LinkHistory]
    model: ModelSelector
    def __init__(self, histories: _Optional[_Iterable[_Union[LinkHistory, _Mapping]]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ...) -> None: ...

class PredictBandwidthBatchResponse(_message.Message):
    __slots__ = ("predictions", "model")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[BandwidthPrediction]
    model: ModelRef
    def __init__(self, predictions: _Optional[_Iterable[_Union[BandwidthPrediction, _Mapping]]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class LinkState(_message.Message):
    __slots__ = ("throughput_mbps", "rtt_ms", "link_type", "packet_loss")
    THROUGHPUT_MBPS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    LINK_TYPE_FIELD_NUMBER: _ClassVar[int]
    PACKET_LOSS_FIELD_NUMBER: _ClassVar[int]
    throughput_mbps: float
    rtt_ms: float
    link_type: LinkType
    packet_loss: float
    def __init__(self, throughput_mbps: _Optional[float] = ..., rtt_ms: _Optional[float] = ..., link_type: _Optional[_Union[LinkType, str]] = ..., packet_loss: _Optional[float] = ...) -> None: ...

class PayloadTraits(_message.Message):
    __slots__ = ("size_bytes", "sample", "entropy_bits_per_byte", "recent_compression_ratio")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_BITS_PER_BYTE_FIELD_NUMBER: _ClassVar[int]
    RECENT_COMPRESSION_RATIO_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    sample: bytes
    entropy_bits_per_byte: float
    recent_compression_ratio: float
    def __init__(self, size_bytes: _Optional[int] = ..., sample: _Optional[bytes] = ..., entropy_bits_per_byte: _Optional[float] = ..., recent_compression_ratio: _Optional[float] = ...) -> None: ...

class CompressionChoice(_message.Message):
    __slots__ = ("codec", "level", "score")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    codec: Codec
    level: int
    score: float
    def __init__(self, codec: _Optional[_Union[Codec, str]] = ..., level: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class SelectCompressionRequest(_message.Message):
    __slots__ = ("link", "payload", "model")
    LINK_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    link: LinkState
    payload: PayloadTraits
    model: ModelSelector
    def __init__(self, link: _Optional[_Union[LinkState, _Mapping]] = ..., payload: _Optional[_Union[PayloadTraits, _Mapping]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ...) -> None: ...

class CompressionDecision(_message.Message):
    __slots__ = ("choice", "scores", "prediction_id")
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    choice: CompressionChoice
    scores: _containers.RepeatedCompositeFieldContainer[CompressionChoice]
    prediction_id: str
    def __init__(self, choice: _Optional[_Union[CompressionChoice, _Mapping]] = ..., scores: _Optional[_Iterable[_Union[CompressionChoice, _Mapping]]] = ..., prediction_id: _Optional[str] = ...) -> None: ...

class SelectCompressionResponse(_message.Message):
    __slots__ = ("decision", "model")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    decision: CompressionDecision
    model: ModelRef
    def __init__(self, decision: _Optional[_Union[CompressionDecision, _Mapping]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class CompressionQuery(_message.Message):
    __slots__ = ("link", "payload")
    LINK_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    link: LinkState
    payload: PayloadTraits
    def __init__(self, link: _Optional[_Union[LinkState, _Mapping]] = ..., payload: _Optional[_Union[PayloadTraits, _Mapping]] = ...) -> None: ...

class SelectCompressionBatchRequest(_message.Message):
    __slots__ = ("queries", "model")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[CompressionQuery]
    model: ModelSelector
    def __init__(self, queries: _Optional[_Iterable[_Union[CompressionQuery, _Mapping]]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ...) -> None: ...

class SelectCompressionBatchResponse(_message.Message):
    __slots__ = ("decisions", "model")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[CompressionDecision]
    model: ModelRef
    def __init__(self, decisions: _Optional[_Iterable[_Union[CompressionDecision, _Mapping]]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class NodeMetrics(_message.Message):
    __slots__ = ("timestamp", "node_id", "error_rate", "timeout_rate", "latency_p50_ms", "latency_p99_ms", "sla_violations", "connection_failures", "packet_loss_rate", "cpu_usage", "memory_usage", "disk_io_mbps", "custom")
    class CustomEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    SLA_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FAILURES_FIELD_NUMBER: _ClassVar[int]
    PACKET_LOSS_RATE_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    DISK_IO_MBPS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    node_id: str
    error_rate: float
    timeout_rate: float
    latency_p50_ms: float
    latency_p99_ms: float
    sla_violations: float
    connection_failures: float
    packet_loss_rate: float
    cpu_usage: float
    memory_usage: float
    disk_io_mbps: float
    custom: _containers.ScalarMap[str, float]
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_id: _Optional[str] = ..., error_rate: _Optional[float] = ..., timeout_rate: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., sla_violations: _Optional[float] = ..., connection_failures: _Optional[float] = ..., packet_loss_rate: _Optional[float] = ..., cpu_usage: _Optional[float] = ..., memory_usage: _Optional[float] = ..., disk_io_mbps: _Optional[float] = ..., custom: _Optional[_Mapping[str, float]] = ...) -> None: ...

class NodeHistory(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[NodeMetrics]
    def __init__(self, samples: _Optional[_Iterable[_Union[NodeMetrics, _Mapping]]] = ...) -> None: ...

class FeatureContribution(_message.Message):
    __slots__ = ("feature", "value", "expected", "deviation")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    DEVIATION_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: float
    expected: float
    deviation: float
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[float] = ..., expected: _Optional[float] = ..., deviation: _Optional[float] = ...) -> None: ...

class DetectAnomalyRequest(_message.Message):
    __slots__ = ("metrics", "model", "history")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    metrics: NodeMetrics
    model: ModelSelector
    history: NodeHistory
    def __init__(self, metrics: _Optional[_Union[NodeMetrics, _Mapping]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ..., history: _Optional[_Union[NodeHistory, _Mapping]] = ...) -> None: ...

class AnomalyVerdict(_message.Message):
    __slots__ = ("is_anomaly", "score", "threshold", "severity", "contributions", "prediction_id")
    IS_ANOMALY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    is_anomaly: bool
    score: float
    threshold: float
    severity: Severity
    contributions: _containers.RepeatedCompositeFieldContainer[FeatureContribution]
    prediction_id: str
    def __init__(self, is_anomaly: _Optional[bool] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., severity: _Optional[_Union[Severity, str]] = ..., contributions: _Optional[_Iterable[_Union[FeatureContribution, _Mapping]]] = ..., prediction_id: _Optional[str] = ...) -> None: ...

class DetectAnomalyResponse(_message.Message):
    __slots__ = ("verdict", "model")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    verdict: AnomalyVerdict
    model: ModelRef
    def __init__(self, verdict: _Optional[_Union[AnomalyVerdict, _Mapping]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class DetectAnomalyBatchRequest(_message.Message):
    __slots__ = ("metrics", "model", "histories")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HISTORIES_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[NodeMetrics]
    model: ModelSelector
    histories: _containers.RepeatedCompositeFieldContainer[NodeHistory]
    def __init__(self, metrics: _Optional[_Iterable[_Union[NodeMetrics, _Mapping]]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ..., histories: _Optional[_Iterable[_Union[NodeHistory, _Mapping]]] = ...) -> None: ...

class DetectAnomalyBatchResponse(_message.Message):
    __slots__ = ("verdicts", "model")
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[AnomalyVerdict]
    model: ModelRef
    def __init__(self, verdicts: _Optional[_Iterable[_Union[AnomalyVerdict, _Mapping]]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class ConsensusSample(_message.Message):
    __slots__ = ("timestamp", "queue_depth", "proposals_pending", "proposals_committed", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "leader_changes", "quorum_size", "active_nodes", "network_tier", "dwcp_mode", "consensus_type", "custom")
    class CustomEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    PROPOSALS_PENDING_FIELD_NUMBER: _ClassVar[int]
    PROPOSALS_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    LEADER_CHANGES_FIELD_NUMBER: _ClassVar[int]
    QUORUM_SIZE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_NODES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_TIER_FIELD_NUMBER: _ClassVar[int]
    DWCP_MODE_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_TYPE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    queue_depth: float
    proposals_pending: float
    proposals_committed: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    leader_changes: float
    quorum_size: float
    active_nodes: float
    network_tier: str
    dwcp_mode: str
    consensus_type: str
    custom: _containers.ScalarMap[str, float]
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queue_depth: _Optional[float] = ..., proposals_pending: _Optional[float] = ..., proposals_committed: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., leader_changes: _Optional[float] = ..., quorum_size: _Optional[float] = ..., active_nodes: _Optional[float] = ..., network_tier: _Optional[str] = ..., dwcp_mode: _Optional[str] = ..., consensus_type: _Optional[str] = ..., custom: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ConsensusWindow(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[ConsensusSample]
    def __init__(self, samples: _Optional[_Iterable[_Union[ConsensusSample, _Mapping]]] = ...) -> None: ...

class DetectHighLatencyRequest(_message.Message):
    __slots__ = ("window", "model")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    window: ConsensusWindow
    model: ModelSelector
    def __init__(self, window: _Optional[_Union[ConsensusWindow, _Mapping]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ...) -> None: ...

class FeatureError(_message.Message):
    __slots__ = ("feature", "error")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    feature: str
    error: float
    def __init__(self, feature: _Optional[str] = ..., error: _Optional[float] = ...) -> None: ...

class LatencyVerdict(_message.Message):
    __slots__ = ("is_high_latency", "reconstruction_error", "threshold", "feature_errors", "prediction_id")
    IS_HIGH_LATENCY_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FEATURE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    is_high_latency: bool
    reconstruction_error: float
    threshold: float
    feature_errors: _containers.RepeatedCompositeFieldContainer[FeatureError]
    prediction_id: str
    def __init__(self, is_high_latency: _Optional[bool] = ..., reconstruction_error: _Optional[float] = ..., threshold: _Optional[float] = ..., feature_errors: _Optional[_Iterable[_Union[FeatureError, _Mapping]]] = ..., prediction_id: _Optional[str] = ...) -> None: ...

class DetectHighLatencyResponse(_message.Message):
    __slots__ = ("verdict", "model")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    verdict: LatencyVerdict
    model: ModelRef
    def __init__(self, verdict: _Optional[_Union[LatencyVerdict, _Mapping]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class DetectHighLatencyBatchRequest(_message.Message):
    __slots__ = ("windows", "model")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[ConsensusWindow]
    model: ModelSelector
    def __init__(self, windows: _Optional[_Iterable[_Union[ConsensusWindow, _Mapping]]] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ...) -> None: ...

class DetectHighLatencyBatchResponse(_message.Message):
    __slots__ = ("verdicts", "model")
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[LatencyVerdict]
    model: ModelRef
    def __init__(self, verdicts: _Optional[_Iterable[_Union[LatencyVerdict, _Mapping]]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("prediction_id", "actual_network", "best_choice", "was_anomaly", "compression_times")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_NETWORK_FIELD_NUMBER: _ClassVar[int]
    BEST_CHOICE_FIELD_NUMBER: _ClassVar[int]
    WAS_ANOMALY_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_TIMES_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    actual_network: NetworkSample
    best_choice: CompressionChoice
    was_anomaly: bool
    compression_times: CompressionTimes
    def __init__(self, prediction_id: _Optional[str] = ..., actual_network: _Optional[_Union[NetworkSample, _Mapping]] = ..., best_choice: _Optional[_Union[CompressionChoice, _Mapping]] = ..., was_anomaly: _Optional[bool] = ..., compression_times: _Optional[_Union[CompressionTimes, _Mapping]] = ...) -> None: ...

class CompressionTimes(_message.Message):
    __slots__ = ("times",)
    class Time(_message.Message):
        __slots__ = ("codec", "level", "seconds")
        CODEC_FIELD_NUMBER: _ClassVar[int]
        LEVEL_FIELD_NUMBER: _ClassVar[int]
        SECONDS_FIELD_NUMBER: _ClassVar[int]
        codec: Codec
        level: int
        seconds: float
        def __init__(self, codec: _Optional[_Union[Codec, str]] = ..., level: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...
    TIMES_FIELD_NUMBER: _ClassVar[int]
    times: _containers.RepeatedCompositeFieldContainer[CompressionTimes.Time]
    def __init__(self, times: _Optional[_Iterable[_Union[CompressionTimes.Time, _Mapping]]] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...
