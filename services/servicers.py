"""The inference servicer: requests in, model answers out. Each RPC takes its request decoded to columns
(decode.py: by the native or the python decoder, or a message from an in-process caller), picks the model version,
checks the columns and takes the version's raw columns from them (convert.py), lets the version decide
(decisions.py: columns for the whole batch) and answers a `Reply` (encode.py) that `rpc` signs and renders: the
response's bytes built natively when the request came through the native decoder, else a message. Errors and
metrics are handled once per call, in `rpc`."""

from __future__ import annotations

import functools
import math
import logging
import time
from typing import Any, Callable, NamedTuple, Sequence

import grpc

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc
from dwcp_inference.features import FeatureError

from . import convert, deadline, decisions, decode, encode
from .decode import Encoded, Undecodable
from .errors import DeadlineExpired, InferenceError, InvalidInput, NonFiniteOutput
from .metrics import Metrics
from .outcomes import OutcomeTracker
from .repository import Repository
from .runtime import ModelRuntime
from .transport import Aborted, CallContext

log = logging.getLogger(__name__)


def rpc(method: Callable) -> Callable:
    """Map domain errors to their status, anything unexpected to INTERNAL (logged), and record metrics."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: "InferenceServicer", request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            native = request.native if isinstance(request, Encoded) else None  # answers bytes: built natively
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
            model = None
            if isinstance(response, encode.Reply):  # signed once for the batch; bytes (native) or a message
                model = response.rt.name, response.rt.version
                response = response.render(self.outcomes.remember_many, native)
            elif hasattr(response, "model") and response.model.name:
                model = response.model.name, response.model.version
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:  # computed too late: not answered, not counted OK
                raise DeadlineExpired(f"{name}: the deadline passed while the call was computed")
            if model is not None:
                self.metrics.child(self.metrics.latency, name, *model).observe(time.perf_counter() - start)
            return response
        except InferenceError as e:
            code = e.code
            if isinstance(e, NonFiniteOutput):  # counted per call answered so (not per group computed together)
                self.metrics.child(self.metrics.nonfinite, e.model, e.version).inc()
                log.error("%s", e)
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


class Coalesced(NamedTuple):
    """How single calls of one RPC are computed as one batch: the model, the decoded form, whether a decoded call
    is one item the batch form takes, and the batch form's computation over the calls' decoded forms."""

    model: str
    form: type
    compute: Callable[["InferenceServicer", list, decode.Selector], encode.Reply]
    ready: Callable[[Any], bool] = lambda decoded: True


COALESCED = {
    "PredictBandwidth": Coalesced("bandwidth_predictor", decode.Bandwidth, lambda s, calls, selector: s._bandwidth(
        decode.concat_samples([c.histories for c in calls]), selector, single=False)),
    "SelectCompression": Coalesced("compression_selector", decode.Compression, lambda s, calls, selector:
                                   s._compression(decode.concat_queries([c.queries for c in calls]), selector,
                                                  single=False)),
    "DetectAnomaly": Coalesced("reliability_detector", decode.Anomaly, lambda s, calls, selector: s._anomaly(
        decode.concat_samples([c.metrics for c in calls]), decode.concat_samples([c.histories for c in calls]),
        selector, single=False), ready=lambda decoded: decoded.has_metrics),
    "DetectHighLatency": Coalesced("consensus_latency", decode.Latency, lambda s, calls, selector: s._latency(
        decode.concat_samples([c.windows for c in calls]), selector, single=False)),
}


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

    def _decide(self, decide: Callable, rt: ModelRuntime, batch: convert.Batch) -> Any:
        try:
            answers = decide(rt, batch.columns)
            shadow = self.outcomes.shadow
            if shadow is not None:  # the candidate on a sample of calls, after this one is answered (shadow.py)
                shadow.offer(decide, rt, batch.columns, len(answers))
            return answers
        except FeatureError as e:
            raise batch.invalid(e) from None

    def _batch(self, rpc_name: str, items: Sequence, field: str) -> None:
        convert.check_batch(items, field, self.max_batch)
        self.metrics.child(self.metrics.batch_size, rpc_name).observe(len(items))

    # ------------------------------------------------------------ bandwidth_predictor

    def _bandwidth(self, histories: decode.Samples, selector: decode.Selector, single: bool) -> encode.Reply:
        rt = self._model("bandwidth_predictor", selector)
        answers = self._decide(decisions.bandwidth, rt,
                               convert.network(histories, rt.meta.window, single, self.max_window))
        now = convert.now()
        return encode.bandwidth(rt, single, answers, histories.last_times(now), now)

    @rpc
    def PredictBandwidth(self, request: decode.Bandwidth, context) -> pb.PredictBandwidthResponse:
        return self._bandwidth(request.histories, request.model, single=True)

    @rpc
    def PredictBandwidthBatch(self, request: decode.Bandwidth, context) -> pb.PredictBandwidthBatchResponse:
        self._batch("PredictBandwidthBatch", request.histories, "histories")
        return self._bandwidth(request.histories, request.model, single=False)

    # ------------------------------------------------------------ compression_selector

    def _compression(self, queries: decode.Queries, selector: decode.Selector, single: bool) -> encode.Reply:
        rt = self._model("compression_selector", selector)
        answers = self._decide(decisions.compression, rt, convert.compression_queries(queries, single))
        return encode.CompressionReply(rt, single, answers=answers)

    @rpc
    def SelectCompression(self, request: decode.Compression, context) -> pb.SelectCompressionResponse:
        return self._compression(request.queries, request.model, single=True)

    @rpc
    def SelectCompressionBatch(self, request: decode.Compression, context) -> pb.SelectCompressionBatchResponse:
        self._batch("SelectCompressionBatch", request.queries, "queries")
        return self._compression(request.queries, request.model, single=False)

    # ------------------------------------------------------------ reliability_detector

    def _anomaly(self, metrics: decode.Samples, histories: decode.Samples, selector: decode.Selector,
                 single: bool) -> encode.Reply:
        rt = self._model("reliability_detector", selector)
        answers = self._decide(decisions.anomaly, rt, convert.nodes(
            metrics, single, histories, rt.meta.window, rt.meta.raw_fields, self.max_window))
        return encode.AnomalyReply(rt, single, answers=answers)

    @rpc
    def DetectAnomaly(self, request: decode.Anomaly, context) -> pb.DetectAnomalyResponse:
        if not request.has_metrics:
            raise InvalidInput("metrics: expected the node's metric vector, got none")
        return self._anomaly(request.metrics, request.histories, request.model, single=True)

    @rpc
    def DetectAnomalyBatch(self, request: decode.Anomaly, context) -> pb.DetectAnomalyBatchResponse:
        self._batch("DetectAnomalyBatch", request.metrics, "metrics")
        return self._anomaly(request.metrics, request.histories, request.model, single=False)

    # ------------------------------------------------------------ consensus_latency

    def _latency(self, windows: decode.Samples, selector: decode.Selector, single: bool) -> encode.Reply:
        rt = self._model("consensus_latency", selector)
        answers = self._decide(decisions.high_latency, rt,
                               convert.consensus(windows, rt.meta.window, single, self.max_window,
                                                 rt.meta.raw_fields))
        return encode.LatencyReply(rt, single, answers=answers)

    @rpc
    def DetectHighLatency(self, request: decode.Latency, context) -> pb.DetectHighLatencyResponse:
        return self._latency(request.windows, request.model, single=True)

    @rpc
    def DetectHighLatencyBatch(self, request: decode.Latency, context) -> pb.DetectHighLatencyBatchResponse:
        self._batch("DetectHighLatencyBatch", request.windows, "windows")
        return self._latency(request.windows, request.model, single=False)

    # ------------------------------------------------------------ single calls computed together

    def many(self, name: str, requests: Sequence, contexts: Sequence[CallContext]) -> list:
        """Single calls of the RPC `name` that arrived together (transport.py's coalescer), each answered as if
        alone: its response, or the `Aborted` its own call would raise. Calls for the same version are computed as
        one batch form; a call that is not plainly one valid item (undecodable, no metrics, an unknown version, a
        deadline passed) takes the single path, and so does every call of a batch whose computation fails, so
        each caller gets a single call's exact status and message."""
        start = time.perf_counter()
        way = COALESCED[name]
        results: list = [None] * len(requests)
        groups: dict[tuple, tuple[ModelRuntime, Any, list[int], list]] = {}  # by version and native or not
        for i, (request, context) in enumerate(zip(requests, contexts)):
            found = self._groupable(way, request, context)
            if found is None:
                results[i] = self._alone(name, request, context)
                continue
            rt, native, decoded = found
            group = groups.setdefault((id(rt), native is None), (rt, native, [], []))
            group[2].append(i)
            group[3].append(decoded)
        for rt, native, calls, decoded in groups.values():
            answers = None
            if len(calls) > 1:
                try:
                    answers = self._together(name, way, rt, native, decoded, [contexts[i] for i in calls], start)
                except InferenceError:  # an invalid item, a version gone: each call alone gets its own message
                    pass
                except Exception:
                    log.exception("%s: %d calls computed together failed; each is computed alone", name, len(calls))
            if answers is None:
                answers = [self._alone(name, requests[i], contexts[i]) for i in calls]
            for i, answer in zip(calls, answers):
                results[i] = answer
        return results

    def _groupable(self, way: "Coalesced", request: Any, context: CallContext) -> tuple | None:
        """(the version answering the call, the native extension or None, its decoded form), or None when it takes
        the single path."""
        try:
            native = request.native if isinstance(request, Encoded) else None
            decoded = decode.from_message(decode.parsed(request))
            if not isinstance(decoded, way.form) or not way.ready(decoded):
                return None
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                return None
            rt = self._model(way.model, decoded.model)  # per call: a traffic split chooses for each call
        except Exception:  # noqa: BLE001 - the single path answers it as it would alone
            return None
        return rt, native, decoded

    def _alone(self, name: str, request: Any, context: CallContext) -> Any:
        try:
            return getattr(self, name)(request, context)
        except Aborted as e:
            return e

    def _together(self, name: str, way: "Coalesced", rt: ModelRuntime, native: Any, decoded: list,
                  contexts: list[CallContext], start: float) -> list:
        """The calls as one batch of version `rt`: their responses (or DEADLINE_EXCEEDED for a call whose
        deadline passed meanwhile), each counted as its own call."""
        self.metrics.child(self.metrics.coalesced, name).observe(len(decoded))
        remaining = [c.time_remaining() for c in contexts]
        token = deadline.start(None if None in remaining else max(remaining))  # computed while anyone waits
        try:
            reply = way.compute(self, decoded, decode.Selector(rt.version))
        finally:
            deadline.end(token)
        responses = reply.render_singles(self.outcomes.remember_many, native)
        latency = self.metrics.child(self.metrics.latency, name, rt.name, rt.version)
        seconds = time.perf_counter() - start
        answers = []
        for response, context in zip(responses, contexts):
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                answers.append(Aborted(code, f"{name}: the deadline passed while the call was computed"))
            else:
                code = grpc.StatusCode.OK
                latency.observe(seconds)
                answers.append(response)
            self.metrics.child(self.metrics.requests, name, code.name).inc()
        return answers

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
