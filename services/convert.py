"""Decoded requests (decode.py: columns, from either decoder) to the raw columns a version reads, and answers to
messages. Structural checks (lengths, enums, empty batches, missing custom values) happen here, over the columns,
with a message made only for the first failure; value checks happen in the feature layer, whose errors `Batch`
names as the caller's field."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.features import FeatureError, PayloadTraits

from . import decisions
from .errors import InvalidInput

if TYPE_CHECKING:
    from .decode import Queries, Samples

NETWORK_FIELDS = ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms", "time_of_day", "day_of_week")
NODE_FIELDS = ("error_rate", "timeout_rate", "latency_p50_ms", "latency_p99_ms", "sla_violations",
               "connection_failures", "packet_loss_rate", "cpu_usage", "memory_usage", "disk_io_mbps")
CONSENSUS_NUMBERS = ("queue_depth", "proposals_pending", "proposals_committed", "latency_p50_ms", "latency_p95_ms",
                     "latency_p99_ms", "leader_changes", "quorum_size", "active_nodes")
CONSENSUS_LABELS = ("network_tier", "dwcp_mode", "consensus_type")
LINK_TYPES = {pb.LINK_TYPE_DC: "dc", pb.LINK_TYPE_METRO: "metro", pb.LINK_TYPE_WAN: "wan", pb.LINK_TYPE_EDGE: "edge"}
CODECS = {"none": pb.CODEC_NONE, "lz4": pb.CODEC_LZ4, "zstd": pb.CODEC_ZSTD, "brotli": pb.CODEC_BROTLI}
SEVERITIES = {"info": pb.SEVERITY_INFO, "warning": pb.SEVERITY_WARNING, "critical": pb.SEVERITY_CRITICAL}
PAYLOAD_FIELDS = {"throughput_mbps": "link.throughput_mbps", "rtt_ms": "link.rtt_ms",
                  "packet_loss": "link.packet_loss", "size_bytes": "payload.size_bytes",
                  "payload_entropy": "payload.entropy_bits_per_byte",
                  "payload_ratio": "payload.recent_compression_ratio"}


class Batch:
    """Raw columns of a batch and how to name a bad value in the caller's terms."""

    def __init__(self, columns: dict[str, np.ndarray], name: Callable[[FeatureError], str]):
        self.columns = columns
        self.name = name

    def invalid(self, e: FeatureError) -> InvalidInput:
        return InvalidInput(f"{self.name(e)}: {e.problem}")


def check_batch(items: Sequence, field: str, max_batch: int) -> None:
    if not items:
        raise InvalidInput(f"{field}: expected at least one item, got none")
    if len(items) > max_batch:
        raise InvalidInput(f"{field}: expected at most {max_batch} items, got {len(items)}")


CUSTOM = "custom."  # a raw field "custom.<name>" is read from the message's `custom` map


def _named(field: str) -> str:
    """A raw field as the caller's message names it: custom.value -> custom['value']."""
    return f"custom[{field[len(CUSTOM):]!r}]" if field.startswith(CUSTOM) else field


def _windows(seqs: "Samples", window: int, fields: Sequence[str], labels: Sequence[str],
             path: Callable[[int, int], str], max_window: int) -> tuple[dict[str, np.ndarray], list[int]]:
    """The last `window` samples of each sequence as [B, W] columns, and each sequence's offset. `path(i, j)`
    names sample j of sequence i as the caller sent it (j = -1: the sequence itself). Checked over the columns;
    a message is made only for the first sequence or sample that fails, in the caller's order."""
    lengths = seqs.lengths.tolist()
    if len(lengths) == 1:  # the single RPCs: plain integers cost less than numpy calls
        bad = 0 if not window <= lengths[0] <= max_window else None
        rows = np.arange(lengths[0] - window, lengths[0])[None, :]
    else:
        fails = (seqs.lengths > max_window) | (seqs.lengths < window)
        bad = int(np.argmax(fails)) if fails.any() else None
        rows = (seqs.starts + seqs.lengths - window)[:, None] + np.arange(window)  # [B, W]: each window's samples
    if bad is not None:
        n = lengths[bad]
        if n > max_window:
            raise InvalidInput(f"{path(bad, -1)}: expected at most {max_window} samples, got {n}")
        raise InvalidInput(f"{path(bad, -1)}: expected at least {window} samples (the model's window), got {n}")
    offsets = [n - window for n in lengths]

    cols: dict[str, np.ndarray] = {}
    plain = [f for f in fields if not f.startswith(CUSTOM)]
    if plain:
        values = seqs.numeric(rows, plain)
        cols.update({f: values[..., k] for k, f in enumerate(plain)})
    for f in fields:
        if f.startswith(CUSTOM):
            key = f[len(CUSTOM):]
            present, column = seqs.custom.get(key, (np.zeros(len(seqs.numbers), bool), np.zeros(len(seqs.numbers))))
            here = present[rows]
            if not here.all():
                i, j = (int(k) for k in np.unravel_index(np.argmin(here), here.shape))
                raise InvalidInput(f"{path(i, offsets[i] + j)}.custom[{key!r}]: missing (this model version "
                                   "reads it)")
            cols[f] = column[rows]
    for f in labels:
        cols[f] = seqs.strings(f, rows)
    return cols, offsets


def _fields(rt_fields: Sequence, numbers: Sequence[str], labels: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The numeric and categorical raw fields a version reads (its metadata's), or the defaults."""
    if not rt_fields:
        return list(numbers), list(labels)
    return [f.name for f in rt_fields if not f.vocabulary], [f.name for f in rt_fields if f.vocabulary]


def network(histories: "Samples", window: int, single: bool, max_window: int = 1024) -> Batch:
    def path(i: int, j: int) -> str:
        seq = "history.samples" if single else f"histories[{i}].samples"
        return seq if j < 0 else f"{seq}[{j}]"

    cols, offsets = _windows(histories, window, NETWORK_FIELDS, (), path, max_window)
    return Batch(cols, lambda e: f"{path(e.index[0], offsets[e.index[0]] + e.index[1])}.{e.field}")


def consensus(windows: "Samples", window: int, single: bool, max_window: int = 1024,
              raw_fields: Sequence = ()) -> Batch:
    def path(i: int, j: int) -> str:
        seq = "window.samples" if single else f"windows[{i}].samples"
        return seq if j < 0 else f"{seq}[{j}]"

    numbers, labels = _fields(raw_fields, CONSENSUS_NUMBERS, CONSENSUS_LABELS)
    cols, offsets = _windows(windows, window, numbers, labels, path, max_window)
    return Batch(cols, lambda e: f"{path(e.index[0], offsets[e.index[0]] + e.index[1])}.{_named(e.field)}")


def nodes(metrics: "Samples", single: bool, histories: "Samples", window: int = 0, raw_fields: Sequence = (),
          max_window: int = 1024) -> Batch:
    """Each item's metric vector (`metrics`: one sample per item); for a version with a window (> 1), its last
    `window` intervals: the history sent beside it, then the current one, as [B, W] columns."""
    numbers, _ = _fields(raw_fields, NODE_FIELDS)
    if window <= 1:
        def where(i: int, j: int = 0) -> str:
            return "metrics" if single else f"metrics[{i}]"

        cols, _ = _windows(metrics, 1, numbers, (), where, max_window)
        return Batch({f: c[:, 0] for f, c in cols.items()}, lambda e: f"{where(e.index[0])}.{_named(e.field)}")
    if not single and len(histories) != len(metrics):
        raise InvalidInput(f"histories: this model version judges each item against its history: expected "
                           f"{len(metrics)} (one per item of metrics), got {len(histories)}")
    past = histories.lengths[:1] if single else histories.lengths

    def path(i: int, j: int) -> str:
        if j == past[i]:
            return "metrics" if single else f"metrics[{i}]"
        seq = "history.samples" if single else f"histories[{i}].samples"
        return seq if j < 0 else f"{seq}[{j}]"

    if ((past + 1) < window).any():
        i = int(np.argmax((past + 1) < window))
        raise InvalidInput(f"{path(i, -1)}: expected at least {window - 1} earlier intervals "
                           f"(the model's window of {window} with the current one), got {past[i]}")
    # each item's sequence: its history's rows, then its own metric vector's row (after all history rows)
    both = histories.concat(metrics)
    n_past = len(histories.numbers)
    starts = histories.starts[:len(past)]
    rows = np.concatenate([np.append(np.arange(s, s + n), n_past + i)
                           for i, (s, n) in enumerate(zip(starts.tolist(), past.tolist()))])
    seqs = both.take(rows, past + 1)
    cols, offsets = _windows(seqs, window, numbers, (), path, max_window + 1)
    return Batch(cols, lambda e: f"{path(e.index[0], offsets[e.index[0]] + e.index[1])}.{_named(e.field)}")


def compression_queries(queries: "Queries", single: bool) -> Batch:
    def prefix(i: int) -> str:
        return "" if single else f"queries[{i}]."

    known = np.isin(queries.link_type, list(LINK_TYPES))
    has_sample = np.array([len(s) > 0 for s in queries.samples], dtype=bool)
    has_traits = has_sample | (queries.has_entropy & queries.has_ratio)
    if not (known & has_traits).all():
        i = int(np.argmin(known & has_traits))
        if not known[i]:
            link_type = int(queries.link_type[i])
            raise InvalidInput(f"{prefix(i)}link.link_type: expected one of "
                               f"{[pb.LinkType.Name(k) for k in LINK_TYPES]}, got {_enum_name(pb.LinkType, link_type)}")
        raise InvalidInput(f"{prefix(i)}payload: expected a sample, or both entropy_bits_per_byte and "
                           "recent_compression_ratio")
    sizes = queries.size_bytes.tolist()
    traits = [PayloadTraits.from_sample(size, sample) if sample else PayloadTraits(size, entropy, ratio)
              for size, sample, entropy, ratio in zip(sizes, queries.samples, queries.entropy.tolist(),
                                                      queries.ratio.tolist())]
    arrays = {"throughput_mbps": queries.link[:, 0].copy(), "rtt_ms": queries.link[:, 1].copy(),
              "packet_loss": queries.link[:, 2].copy(),  # copies: the native decoder's buffers are read-only
              "link_type": np.array([LINK_TYPES[k] for k in queries.link_type.tolist()], dtype=str),
              "size_bytes": np.array([t.size_bytes for t in traits], dtype=np.float64),
              "payload_entropy": np.array([t.entropy for t in traits], dtype=np.float64),
              "payload_ratio": np.array([t.ratio for t in traits], dtype=np.float64)}
    return Batch(arrays, lambda e: f"{prefix(e.index[0])}{PAYLOAD_FIELDS.get(e.field, e.field)}")


def codec_name(codec: int, field: str) -> str:
    """The metadata's name of a Codec value, or InvalidInput naming `field`."""
    for name, value in CODECS.items():
        if value == codec:
            return name
    raise InvalidInput(f"{field}: expected one of {[pb.Codec.Name(c) for c in CODECS.values()]}, "
                       f"got {_enum_name(pb.Codec, codec)}")


def _enum_name(enum, value: int) -> str:
    try:
        return enum.Name(value)
    except ValueError:
        return str(value)


# ------------------------------------------------------------------ answers to messages

def timestamp(seconds: float) -> Timestamp:
    whole = math.floor(seconds)
    return Timestamp(seconds=whole, nanos=min(int((seconds - whole) * 1e9), 999_999_999))


def bandwidth_prediction(a: decisions.BandwidthAnswer, base: float, prediction_id: str,
                         now: float) -> pb.BandwidthPrediction:
    """`base`: the time of the history's last sample (its timestamp, else now)."""
    return pb.BandwidthPrediction(
        predicted_bandwidth_mbps=a.bandwidth_mbps, predicted_latency_ms=a.latency_ms,
        predicted_packet_loss=a.packet_loss, predicted_jitter_ms=a.jitter_ms, confidence=a.confidence,
        valid_until=timestamp(base + a.horizon_seconds), prediction_time=timestamp(now), prediction_id=prediction_id)


def compression_decision(a: decisions.CompressionAnswer, prediction_id: str) -> pb.CompressionDecision:
    scores = [pb.CompressionChoice(codec=CODECS[c], level=lvl, score=p) for c, lvl, p in a.ranked]
    return pb.CompressionDecision(choice=scores[0], scores=scores, prediction_id=prediction_id)


def anomaly_verdict(a: decisions.AnomalyAnswer, prediction_id: str) -> pb.AnomalyVerdict:
    return pb.AnomalyVerdict(
        is_anomaly=a.is_anomaly, score=a.score, threshold=a.threshold, severity=SEVERITIES[a.severity],
        contributions=[pb.FeatureContribution(feature=f, value=v, expected=m, deviation=d)
                       for f, v, m, d in a.contributions], prediction_id=prediction_id)


def latency_verdict(a: decisions.LatencyAnswer, prediction_id: str) -> pb.LatencyVerdict:
    return pb.LatencyVerdict(
        is_high_latency=a.is_high_latency, reconstruction_error=a.error, threshold=a.threshold,
        feature_errors=[pb.FeatureError(feature=f, error=e) for f, e in a.feature_errors],
        prediction_id=prediction_id)


def now() -> float:
    return time.time()
