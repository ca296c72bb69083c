"""A batch's answers (decisions.py columns) to its response: a message built in Python (convert.py), or the
serialized bytes the native extension builds from the same columns (native/src/encode.rs, wire.rs), byte for byte
the same. The servicer's methods answer a `Reply`; its `rpc` wrapper renders it: bytes when the request came through
the native decoder (`decode.Encoded`), a message otherwise (the python decoder, in-process callers). The response
serializer (`serializer`) passes bytes through and serializes a message."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from google.protobuf.message import Message

from dwcp_inference.api import inference_pb2 as pb

from . import convert, decisions
from .prediction_ids import CODECS as ID_CODECS, Choices
from .runtime import ModelRuntime


def serializer(response_cls: type) -> Callable[[Any], bytes]:
    """The response serializer of an RPC: bytes (the native path's) as they are, a message serialized."""
    serialize = response_cls.SerializeToString

    def serialize_response(response: Any) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serialize_response


@dataclass
class Reply:
    """A call's answers, to be signed (one id per item) and rendered as a message or as bytes."""

    rt: ModelRuntime
    single: bool

    single_cls: type = Message  # the response types, and their field of answers
    batch_cls: type = Message
    fields: tuple[str, str] = ("", "")

    def predicted(self) -> Any:
        """What each item's prediction id carries (prediction_ids.sign_many)."""
        raise NotImplementedError

    def items(self, ids: Sequence[str]) -> list:
        """The answers as messages (the python path)."""
        raise NotImplementedError

    def encoded(self, native: Any, ids: list[str]) -> bytes:
        """The response's bytes (the native path)."""
        raise NotImplementedError

    def message(self, ids: Sequence[str]) -> Message:
        items, ref = self.items(ids), pb.ModelRef(name=self.rt.name, version=self.rt.version)
        if self.single:
            return self.single_cls(**{self.fields[0]: items[0]}, model=ref)
        return self.batch_cls(**{self.fields[1]: items}, model=ref)

    def render(self, sign: Callable[..., list[str]], native: Any = None) -> Message | bytes:
        """Signed and rendered: `sign(model, version, predicted, native=...)` makes the ids; `native`, the
        extension, makes bytes (None: a message)."""
        ids = sign(self.rt.name, self.rt.version, self.predicted(), native=native)
        return self.message(ids) if native is None else self.encoded(native, ids)

    def render_singles(self, sign: Callable[..., list[str]], native: Any = None) -> list[Message | bytes]:
        """A batch's answers as the single responses of the calls computed together in it, one per item, signed
        once for the batch: messages, or the batch's bytes split (`split_batch`)."""
        ids = sign(self.rt.name, self.rt.version, self.predicted(), native=native)
        if native is not None:
            return split_batch(self.encoded(native, ids), len(ids))
        ref = pb.ModelRef(name=self.rt.name, version=self.rt.version)
        return [self.single_cls(**{self.fields[0]: item}, model=ref) for item in self.items(ids)]


ITEM_TAG = 0x0A  # field 1, length-delimited: the item(s) of every inference response; field 2 is the model


def split_batch(data: bytes, n: int) -> list[bytes]:
    """A batch response's bytes, [1: item 0] ... [1: item n-1] [2: model], as n single responses [1: item k]
    [2: model]: byte for byte what the single form's encoder writes, as both forms number their fields alike."""
    items, pos = [], 0
    for _ in range(n):
        if data[pos] != ITEM_TAG:
            raise ValueError(f"a batch response's item {len(items)}: expected field 1, got tag {data[pos]}")
        length, shift, start = 0, 0, pos + 1
        while True:  # the item's length, a varint
            byte = data[start]
            length |= (byte & 0x7F) << shift
            shift, start = shift + 7, start + 1
            if byte < 0x80:
                break
        items.append(data[pos:start + length])
        pos = start + length
    model = data[pos:]
    return [item + model for item in items]


def _b(array: np.ndarray, dtype: Any) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


@dataclass
class BandwidthReply(Reply):
    answers: decisions.BandwidthAnswers = None
    valid_until: tuple[np.ndarray, np.ndarray] = None  # seconds [B], nanos [B]
    now: tuple[int, int] = (0, 0)

    single_cls: type = pb.PredictBandwidthResponse
    batch_cls: type = pb.PredictBandwidthBatchResponse
    fields: tuple[str, str] = ("prediction", "predictions")

    def predicted(self) -> np.ndarray:
        return self.answers.bandwidth_mbps

    def items(self, ids: Sequence[str]) -> list:
        return convert.bandwidth_predictions(self.answers, ids, self.valid_until, self.now)

    def encoded(self, native: Any, ids: list[str]) -> bytes:
        a = self.answers
        return native.encode_bandwidth(
            self.rt.name, self.rt.version, ids,
            [_b(c, np.float64) for c in (a.bandwidth_mbps, a.latency_ms, a.packet_loss, a.jitter_ms, a.confidence)],
            _b(self.valid_until[0], np.int64), _b(self.valid_until[1], np.int32), *self.now,
            None if a.p10_mbps is None else [_b(a.p10_mbps, np.float64), _b(a.p90_mbps, np.float64)])


def bandwidth(rt: ModelRuntime, single: bool, answers: decisions.BandwidthAnswers, base: np.ndarray,
              now: float) -> BandwidthReply:
    """`base`: each item's time of its last sample (its timestamp, else now) in seconds."""
    if len(base) == 1:  # a single call: plain floats cost less than numpy calls (the same arithmetic)
        one = convert.seconds_nanos(float(base[0]) + answers.horizon_seconds)
        seconds, nanos = np.array([one[0]], dtype=np.int64), np.array([one[1]], dtype=np.int32)
    else:
        seconds, nanos = convert.timestamps(np.asarray(base, dtype=np.float64) + answers.horizon_seconds)
    return BandwidthReply(rt, single, answers=answers, valid_until=(seconds, nanos), now=convert.seconds_nanos(now))


@dataclass
class CompressionReply(Reply):
    answers: decisions.CompressionAnswers = None

    single_cls: type = pb.SelectCompressionResponse
    batch_cls: type = pb.SelectCompressionBatchResponse
    fields: tuple[str, str] = ("decision", "decisions")

    def predicted(self) -> Choices:
        a = self.answers
        _, id_codes, levels = _choices(tuple(a.codecs), tuple(a.levels))
        return Choices(id_codes[a.best], levels[a.best])

    def items(self, ids: Sequence[str]) -> list:
        return convert.compression_decisions(self.answers, ids)

    def encoded(self, native: Any, ids: list[str]) -> bytes:
        a = self.answers
        enum_codes, _, _ = _choices(tuple(a.codecs), tuple(a.levels))
        return native.encode_compression(self.rt.name, self.rt.version, ids, enum_codes, a.levels,
                                         _b(a.ranked, np.int64), _b(a.probability, np.float64))


@functools.lru_cache(maxsize=64)
def _choices(codecs: tuple[str, ...], levels: tuple[int, ...]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """A version's choices as the response's Codec values, the ids' codec bytes and levels (KeyError, ValueError
    for a codec either does not know, as the per-item path failed)."""
    return ([convert.CODECS[c] for c in codecs], np.array([ID_CODECS.index(c) for c in codecs], dtype=np.int64),
            np.array(levels, dtype=np.int64))


@dataclass
class AnomalyReply(Reply):
    answers: decisions.AnomalyAnswers = None

    single_cls: type = pb.DetectAnomalyResponse
    batch_cls: type = pb.DetectAnomalyBatchResponse
    fields: tuple[str, str] = ("verdict", "verdicts")

    def predicted(self) -> np.ndarray:
        return self.answers.is_anomaly

    def items(self, ids: Sequence[str]) -> list:
        return convert.anomaly_verdicts(self.answers, ids)

    def encoded(self, native: Any, ids: list[str]) -> bytes:
        a = self.answers
        return native.encode_anomaly(
            self.rt.name, self.rt.version, ids, _b(a.is_anomaly, np.uint8), _b(a.score, np.float64), a.threshold,
            _b(a.severity, np.int32), a.names, a.feature.shape[1], _b(a.feature, np.int64),
            [_b(c, np.float64) for c in (a.value, a.expected, a.deviation)])


@dataclass
class LatencyReply(Reply):
    answers: decisions.LatencyAnswers = None

    single_cls: type = pb.DetectHighLatencyResponse
    batch_cls: type = pb.DetectHighLatencyBatchResponse
    fields: tuple[str, str] = ("verdict", "verdicts")

    def predicted(self) -> np.ndarray:
        return self.answers.is_high_latency

    def items(self, ids: Sequence[str]) -> list:
        return convert.latency_verdicts(self.answers, ids)

    def encoded(self, native: Any, ids: list[str]) -> bytes:
        a = self.answers
        return native.encode_latency(
            self.rt.name, self.rt.version, ids, _b(a.is_high_latency, np.uint8), _b(a.error, np.float64),
            a.threshold, list(a.names), a.feature.shape[1], _b(a.feature, np.int64), _b(a.feature_error, np.float64))
