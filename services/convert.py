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
from dwcp_inference.contracts import BANDWIDTH, COMPRESSION, CONSENSUS, RELIABILITY
from dwcp_inference.features import FeatureError, PayloadTraits

from . import decisions
from .errors import InvalidInput

if TYPE_CHECKING:
    from .decode import Queries, Samples

# The raw fields each message carries, from the model contracts (dwcp_inference/contracts/), in the order of
# the message's fields: the order both decoders lay out a sample's numbers (native/src/lib.rs; tests/test_contracts.py)
NETWORK_FIELDS = BANDWIDTH.flat_names
NODE_FIELDS = RELIABILITY.flat_names
CONSENSUS_NUMBERS = CONSENSUS.flat_names
CONSENSUS_LABELS = CONSENSUS.labels
LINK_TYPES = {pb.LinkType.Value(f"LINK_TYPE_{name.upper()}"): name
              for name in COMPRESSION.field("link_type").vocabulary}
CODECS = {"none": pb.CODEC_NONE, "lz4": pb.CODEC_LZ4, "zstd": pb.CODEC_ZSTD, "brotli": pb.CODEC_BROTLI}
SEVERITIES = {"info": pb.SEVERITY_INFO, "warning": pb.SEVERITY_WARNING, "critical": pb.SEVERITY_CRITICAL}
PAYLOAD_FIELDS = {f.name: f.path for f in COMPRESSION.fields}  # raw field -> its path in a query


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
        rows = np.s_[None, lengths[0] - window:lengths[0]]  # [1, W] views: no gather
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
        cols.update(seqs.numeric(rows, plain))
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

    link_types = queries.link_type.tolist()
    has_sample = np.array([len(s) > 0 for s in queries.samples], dtype=bool)
    has_traits = has_sample | (queries.has_entropy & queries.has_ratio)
    if not (all(k in LINK_TYPES for k in link_types) and has_traits.all()):  # the first bad item's message
        known = np.array([k in LINK_TYPES for k in link_types], dtype=bool)
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
              "link_type": np.array([LINK_TYPES[k] for k in link_types], dtype=str),
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
# The python path's responses, from the columns of a batch's answers (decisions.py); encode.py holds the native
# path, which makes the same bytes from the same columns.

def timestamp(seconds: float) -> Timestamp:
    whole, nanos = seconds_nanos(seconds)
    return Timestamp(seconds=whole, nanos=nanos)


def seconds_nanos(seconds: float) -> tuple[int, int]:
    """A time in seconds as a Timestamp's whole seconds and nanos (failing as Timestamp would)."""
    whole = math.floor(seconds)
    if not -2 ** 63 <= whole < 2 ** 63:
        raise ValueError("Value out of range: a timestamp's seconds")
    return whole, min(int((seconds - whole) * 1e9), 999_999_999)


def timestamps(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`timestamp` over an array: whole seconds [B] int64 and nanos [B] int32 (failing where it would)."""
    seconds = np.asarray(seconds, dtype=np.float64)
    if not np.isfinite(seconds).all():
        raise OverflowError("cannot convert a non-finite float to a timestamp")
    whole = np.floor(seconds)
    if ((whole < -2.0 ** 63) | (whole >= 2.0 ** 63)).any():
        raise ValueError("Value out of range: a timestamp's seconds")
    nanos = np.minimum(((seconds - whole) * 1e9).astype(np.int64), 999_999_999)
    return whole.astype(np.int64), nanos.astype(np.int32)


def bandwidth_predictions(a: decisions.BandwidthAnswers, ids: Sequence[str],
                          valid_until: tuple[np.ndarray, np.ndarray],
                          now: tuple[int, int]) -> list[pb.BandwidthPrediction]:
    """`valid_until`: each item's (seconds, nanos); `now`: the prediction time's."""
    made = Timestamp(seconds=now[0], nanos=now[1])
    columns = (a.bandwidth_mbps, a.latency_ms, a.packet_loss, a.jitter_ms, a.confidence, *valid_until)
    out = [pb.BandwidthPrediction(
        predicted_bandwidth_mbps=b, predicted_latency_ms=lat, predicted_packet_loss=loss, predicted_jitter_ms=jit,
        confidence=c, valid_until=Timestamp(seconds=s, nanos=n), prediction_time=made, prediction_id=pid)
        for b, lat, loss, jit, c, s, n, pid in zip(*(col.tolist() for col in columns), ids)]
    if a.p10_mbps is not None:  # a version with quantile outputs: its interval (optional fields, set even at 0)
        for p, lo, hi in zip(out, a.p10_mbps.tolist(), a.p90_mbps.tolist()):
            p.predicted_bandwidth_p10_mbps, p.predicted_bandwidth_p90_mbps = lo, hi
    return out


def compression_decisions(a: decisions.CompressionAnswers, ids: Sequence[str]) -> list[pb.CompressionDecision]:
    codecs = [CODECS[c] for c in a.codecs]
    out = []
    for order, probs, pid in zip(a.ranked.tolist(), a.probability.tolist(), ids):
        scores = [pb.CompressionChoice(codec=codecs[k], level=a.levels[k], score=p) for k, p in zip(order, probs)]
        out.append(pb.CompressionDecision(choice=scores[0], scores=scores, prediction_id=pid))
    return out


def anomaly_verdicts(a: decisions.AnomalyAnswers, ids: Sequence[str]) -> list[pb.AnomalyVerdict]:
    names = a.names
    return [pb.AnomalyVerdict(
        is_anomaly=flag, score=s, threshold=a.threshold, severity=sev,
        contributions=[pb.FeatureContribution(feature=names[k], value=v, expected=m, deviation=d)
                       for k, v, m, d in zip(ks, vs, ms, ds)], prediction_id=pid)
        for flag, s, sev, ks, vs, ms, ds, pid in zip(
            a.is_anomaly.tolist(), a.score.tolist(), a.severity.tolist(), a.feature.tolist(), a.value.tolist(),
            a.expected.tolist(), a.deviation.tolist(), ids)]


def latency_verdicts(a: decisions.LatencyAnswers, ids: Sequence[str]) -> list[pb.LatencyVerdict]:
    names = a.names
    return [pb.LatencyVerdict(
        is_high_latency=flag, reconstruction_error=e, threshold=a.threshold,
        feature_errors=[pb.FeatureError(feature=names[k], error=v) for k, v in zip(ks, vs)], prediction_id=pid)
        for flag, e, ks, vs, pid in zip(a.is_high_latency.tolist(), a.error.tolist(), a.feature.tolist(),
                                        a.feature_error.tolist(), ids)]


def now() -> float:
    return time.time()
