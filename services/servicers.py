"""The inference servicer: requests in, model answers out. Each RPC takes its request decoded to columns
(decode.py: by the native or the python decoder, or a message from an in-process caller), picks the model version,
checks the columns and takes the version's raw columns from them (convert.py), lets the version decide
(decisions.py) and converts back. Errors and metrics are handled once, in `rpc`."""

from __future__ import annotations

import functools
import math
import logging
import time
from typing import Any, Callable, Sequence

import grpc

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.features import FeatureError

from . import convert, deadline, decisions, decode
from .decode import Undecodable
from .errors import DeadlineExpired, InferenceError, InvalidInput, NonFiniteOutput
from .metrics import Metrics
from .outcomes import OutcomeTracker
from .repository import Repository
from .runtime import ModelRuntime

log = logging.getLogger(__name__)


def rpc(method: Callable) -> Callable:
    """Map domain errors to their status, anything unexpected to INTERNAL (logged), and record metrics."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: "InferenceServicer", request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            request = decode.parsed(request)  # the native decoder's work, in this worker thread
            if isinstance(request, Undecodable):
                raise InvalidInput(f"request: the bytes are not a serialized {request.type_name}")
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:  # the caller gave up while it queued: do not compute
                raise DeadlineExpired(f"{name}: the deadline passed before the call was computed")
            token = deadline.start(remaining)  # checked again before the model runs (runtime, batching)
            try:  # a message (in-process callers) is decoded here; the server's deserializer decoded the bytes
                response = method(self, decode.from_message(request), context)
            finally:
                deadline.end(token)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:  # computed too late: not answered, not counted OK
                raise DeadlineExpired(f"{name}: the deadline passed while the call was computed")
            if hasattr(response, "model") and response.model.name:
                self.metrics.child(self.metrics.latency, name, response.model.name, response.model.version).observe(
                    time.perf_counter() - start)
            return response
        except InferenceError as e:
            code = e.code
            context.abort(code, str(e))
        except Exception:
            log.exception("%s failed", name)
            code = grpc.StatusCode.INTERNAL
            context.abort(code, f"{name}: internal error, see the server log")
        finally:
            if getattr(self, "ADMIN_RPCS", False):  # apart from inference: requests_total feeds the HPA
                self.metrics.observe_admin(name, code.name, time.perf_counter() - start)
            else:
                self.metrics.child(self.metrics.requests, name, code.name).inc()

    return wrapper


def _ref(rt: ModelRuntime) -> pb.ModelRef:
    return pb.ModelRef(name=rt.name, version=rt.version)


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    def __init__(self, repo: Repository, outcomes: OutcomeTracker, metrics: Metrics, max_batch: int,
                 max_window: int = 1024):
        self.repo = repo
        self.outcomes = outcomes
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_window = max_window

    def _model(self, name: str, selector: pb.ModelSelector) -> ModelRuntime:
        return self.repo.get(name, selector.version, selector.label)

    def _decide(self, decide: Callable, rt: ModelRuntime, batch: convert.Batch) -> list:
        try:
            return decide(rt, batch.columns)
        except FeatureError as e:
            raise batch.invalid(e) from None
        except NonFiniteOutput as e:
            self.metrics.child(self.metrics.nonfinite, e.model, e.version).inc()
            log.error("%s", e)
            raise

    def _batch(self, rpc_name: str, items: Sequence, field: str) -> None:
        convert.check_batch(items, field, self.max_batch)
        self.metrics.batch_size.labels(rpc_name).observe(len(items))

    # ------------------------------------------------------------ bandwidth_predictor

    def _bandwidth(self, histories: decode.Samples, selector: decode.Selector, single: bool):
        rt = self._model("bandwidth_predictor", selector)
        answers = self._decide(decisions.bandwidth, rt,
                               convert.network(histories, rt.meta.window, single, self.max_window))
        now = convert.now()
        ids = self.outcomes.remember_many(rt.name, rt.version, [a.bandwidth_mbps for a in answers])
        return rt, [convert.bandwidth_prediction(a, histories.last_time(i, now), pid, now)
                    for i, (a, pid) in enumerate(zip(answers, ids))]

    @rpc
    def PredictBandwidth(self, request: decode.Bandwidth, context) -> pb.PredictBandwidthResponse:
        rt, preds = self._bandwidth(request.histories, request.model, single=True)
        return pb.PredictBandwidthResponse(prediction=preds[0], model=_ref(rt))

    @rpc
    def PredictBandwidthBatch(self, request: decode.Bandwidth, context):
        self._batch("PredictBandwidthBatch", request.histories, "histories")
        rt, preds = self._bandwidth(request.histories, request.model, single=False)
        return pb.PredictBandwidthBatchResponse(predictions=preds, model=_ref(rt))

    # ------------------------------------------------------------ compression_selector

    def _compression(self, queries: decode.Queries, selector: decode.Selector, single: bool):
        rt = self._model("compression_selector", selector)
        answers = self._decide(decisions.compression, rt, convert.compression_queries(queries, single))
        ids = self.outcomes.remember_many(rt.name, rt.version, [a.ranked[0][:2] for a in answers])
        return rt, [convert.compression_decision(a, pid) for a, pid in zip(answers, ids)]

    @rpc
    def SelectCompression(self, request: decode.Compression, context) -> pb.SelectCompressionResponse:
        rt, out = self._compression(request.queries, request.model, single=True)
        return pb.SelectCompressionResponse(decision=out[0], model=_ref(rt))

    @rpc
    def SelectCompressionBatch(self, request: decode.Compression, context):
        self._batch("SelectCompressionBatch", request.queries, "queries")
        rt, out = self._compression(request.queries, request.model, single=False)
        return pb.SelectCompressionBatchResponse(decisions=out, model=_ref(rt))

    # ------------------------------------------------------------ reliability_detector

    def _anomaly(self, metrics: decode.Samples, histories: decode.Samples, selector: decode.Selector,
                 single: bool):
        rt = self._model("reliability_detector", selector)
        answers = self._decide(decisions.anomaly, rt, convert.nodes(
            metrics, single, histories, rt.meta.window, rt.meta.raw_fields, self.max_window))
        ids = self.outcomes.remember_many(rt.name, rt.version, [a.is_anomaly for a in answers])
        return rt, [convert.anomaly_verdict(a, pid) for a, pid in zip(answers, ids)]

    @rpc
    def DetectAnomaly(self, request: decode.Anomaly, context) -> pb.DetectAnomalyResponse:
        if not request.has_metrics:
            raise InvalidInput("metrics: expected the node's metric vector, got none")
        rt, out = self._anomaly(request.metrics, request.histories, request.model, single=True)
        return pb.DetectAnomalyResponse(verdict=out[0], model=_ref(rt))

    @rpc
    def DetectAnomalyBatch(self, request: decode.Anomaly, context):
        self._batch("DetectAnomalyBatch", request.metrics, "metrics")
        rt, out = self._anomaly(request.metrics, request.histories, request.model, single=False)
        return pb.DetectAnomalyBatchResponse(verdicts=out, model=_ref(rt))

    # ------------------------------------------------------------ consensus_latency

    def _latency(self, windows: decode.Samples, selector: decode.Selector, single: bool):
        rt = self._model("consensus_latency", selector)
        answers = self._decide(decisions.high_latency, rt,
                               convert.consensus(windows, rt.meta.window, single, self.max_window,
                                                 rt.meta.raw_fields))
        ids = self.outcomes.remember_many(rt.name, rt.version, [a.is_high_latency for a in answers])
        return rt, [convert.latency_verdict(a, pid) for a, pid in zip(answers, ids)]

    @rpc
    def DetectHighLatency(self, request: decode.Latency, context) -> pb.DetectHighLatencyResponse:
        rt, out = self._latency(request.windows, request.model, single=True)
        return pb.DetectHighLatencyResponse(verdict=out[0], model=_ref(rt))

    @rpc
    def DetectHighLatencyBatch(self, request: decode.Latency, context):
        self._batch("DetectHighLatencyBatch", request.windows, "windows")
        rt, out = self._latency(request.windows, request.model, single=False)
        return pb.DetectHighLatencyBatchResponse(verdicts=out, model=_ref(rt))

    # ------------------------------------------------------------ outcomes

    def _bandwidth_range(self) -> tuple[float, float]:
        """A NetworkSample's valid bandwidth_mbps, as the serving bandwidth version's raw fields declare it."""
        try:
            fields = self.repo.get("bandwidth_predictor").meta.raw_fields
        except InferenceError:  # no version loaded: finite and > 0 only
            fields = []
        for f in fields:
            if f.name == "bandwidth_mbps":
                return (-math.inf if f.min is None else f.min), (math.inf if f.max is None else f.max)
        return -math.inf, math.inf

    @rpc
    def ReportOutcome(self, request: pb.ReportOutcomeRequest, context) -> pb.ReportOutcomeResponse:
        if not request.prediction_id:
            raise InvalidInput("prediction_id: expected the id of an earlier prediction, got none")
        kind = request.WhichOneof("outcome") or ""
        if kind == "actual_network":
            actual: Any = request.actual_network.bandwidth_mbps
            lo, hi = self._bandwidth_range()
            if not (math.isfinite(actual) and actual > 0 and lo <= actual <= hi):
                raise InvalidInput(f"actual_network.bandwidth_mbps: expected a finite number > 0 and <= {hi:g} "
                                   f"(the error is relative to it), got {actual:g}")
        elif kind == "best_choice":
            actual = (convert.codec_name(request.best_choice.codec, "best_choice.codec"), request.best_choice.level), {}
        elif kind == "compression_times":
            times = {}
            for i, t in enumerate(request.compression_times.times):
                if not (t.seconds > 0 and math.isfinite(t.seconds)):
                    raise InvalidInput(f"compression_times.times[{i}].seconds: expected a finite number > 0, "
                                       f"got {t.seconds:g}")
                times[(convert.codec_name(t.codec, f"compression_times.times[{i}].codec"), t.level)] = t.seconds
            if not times:
                raise InvalidInput("compression_times.times: expected at least one measured choice, got none")
            actual, kind = (min(times, key=times.get), times), "best_choice"
        else:
            actual = request.was_anomaly
        model, version = self.outcomes.report(request.prediction_id, kind, actual)
        return pb.ReportOutcomeResponse(model=pb.ModelRef(name=model, version=version))
