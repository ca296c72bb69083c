"""The Open Inference Protocol (KServe V2, `inference.GRPCInferenceService`) on the inference port, beside our
typed API (docs/v2.md).

ModelInfer answers by construction what the typed API answers: its input tensors become the typed batch request
(v2_models.py), which the typed servicer answers in-process (versions, labels, validation, features, decisions,
prediction ids and metrics are its own), and the typed response becomes output tensors. A typed error names the
V2 input and index instead of the typed field. ServerLive, ServerReady and ModelReady follow grpc.health's states;
they and the metadata RPCs are answered on the event loop, like health, never shed; ModelInfer is admitted and
computed like a typed call."""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any, Callable

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from dwcp_inference import MODEL_KINDS, __version__
from dwcp_inference.api import grpc_predict_v2_pb2 as v2
from dwcp_inference.api import inference_pb2 as pb

from .errors import InferenceError, InvalidInput, ModelNotFound, shown
from .metrics import Metrics
from .repository import Repository
from .transport import Admission, SharedHealth, threaded_handler
from .v2_models import FORMS, LABEL_PARAMETER
from .v2_tensors import decode_inputs, encode_output

log = logging.getLogger(__name__)
SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "dwcp-inference"
PLATFORM = "onnxruntime_onnx"  # Triton's name for what runs each version
LIVENESS = "liveness"  # server.py's always-SERVING-until-shutdown health service
SERVING = health_pb2.HealthCheckResponse.SERVING


class _TypedAbort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code, self.details = code, details


class _TypedContext:
    """The caller's context for the in-process typed call, with its abort caught here (to name V2 inputs)."""

    def __init__(self, outer: Any):
        self._outer = outer

    def time_remaining(self) -> float | None:
        return self._outer.time_remaining()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _TypedAbort(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outer, name)


MAX_DETAILS = 2048  # characters of a status message: it travels in metadata, 8 KiB at most by default


def _details(message: str) -> str:
    """A status message that fits in the trailers (one echoing a huge version or name would not arrive at all: the
    client would see RESOURCE_EXHAUSTED about metadata instead)."""
    return message if len(message) <= MAX_DETAILS else message[:MAX_DETAILS] + "..."


def _selection_message(e: InferenceError) -> str:
    """A version or label refusal, named as V2 names them."""
    return _details(str(e)).replace("model.version:", "model_version:").replace(
        "model.label:", f"parameters[{LABEL_PARAMETER!r}]:")


class Undecodable:
    """ModelInfer bytes that are not a ModelInferRequest (answered INVALID_ARGUMENT, not gRPC's INTERNAL)."""


def _parse_infer(data: bytes) -> Any:
    try:
        return v2.ModelInferRequest.FromString(data)
    except DecodeError:
        return Undecodable()


class V2Servicer:
    def __init__(self, repo: Repository, typed: Any, metrics: Metrics, health: Callable[[str], bool]):
        self.repo = repo
        self.typed = typed
        self.metrics = metrics
        self.health = health

    # ------------------------------------------------------------ inference (a worker thread)

    def ModelInfer(self, request: Any, context: Any) -> v2.ModelInferResponse:
        try:
            form, rt, typed_request, samples, wanted = self._typed_request(request)
        except InferenceError as e:  # refused before the typed call: counted here (after it, as the typed RPC)
            self.metrics.child(self.metrics.requests, "ModelInfer", e.code.name).inc()
            context.abort(e.code, _details(str(e)))
        except Exception:
            log.exception("ModelInfer failed")
            self.metrics.child(self.metrics.requests, "ModelInfer", grpc.StatusCode.INTERNAL.name).inc()
            context.abort(grpc.StatusCode.INTERNAL, "ModelInfer: internal error, see the server log")
        try:
            response = getattr(self.typed, form.rpc)(typed_request, _TypedContext(context))
        except _TypedAbort as e:
            details = e.details
            if e.code == grpc.StatusCode.INVALID_ARGUMENT:
                details = form.translate(details, rt.meta, samples)
            context.abort(e.code, _details(details))
        try:
            if isinstance(response, bytes):  # a typed servicer answering serialized bytes
                response = getattr(pb, type(typed_request).__name__.replace("Request", "Response")).FromString(
                    response)
            answers = form.answer(response)
            out = v2.ModelInferResponse(model_name=form.model, model_version=response.model.version, id=request.id)
            for spec in wanted:
                encode_output(spec.name, spec.datatype, answers[spec.name], out, raw=bool(request.raw_input_contents))
            return out
        except Exception:  # answered and counted by the typed RPC; only the conversion failed
            log.exception("ModelInfer: converting the %s answer failed", form.rpc)
        context.abort(grpc.StatusCode.INTERNAL, "ModelInfer: internal error, see the server log")

    def _typed_request(self, request: Any):
        if isinstance(request, Undecodable):
            raise InvalidInput("request: the bytes are not a serialized inference.ModelInferRequest")
        form = FORMS.get(request.model_name)
        if form is None:
            raise ModelNotFound(f"model_name: unknown model {shown(request.model_name)}, expected one of "
                                f"{list(MODEL_KINDS)}")
        label = ""
        if LABEL_PARAMETER in request.parameters:
            p = request.parameters[LABEL_PARAMETER]
            if p.WhichOneof("parameter_choice") != "string_param":
                raise InvalidInput(f"parameters[{LABEL_PARAMETER!r}]: expected a string_param (a version label)")
            label = p.string_param
        try:
            rt = self.repo.get(form.model, request.model_version, label)
        except InferenceError as e:
            raise type(e)(_selection_message(e)) from None
        cols = form.columns(rt.meta, decode_inputs(request, self.typed.max_batch))
        outputs = {t.name: t for t in form.outputs(rt.meta)}
        wanted = list(outputs.values())
        if request.outputs:
            wanted = []
            for k, o in enumerate(request.outputs):
                if o.name not in outputs:
                    raise InvalidInput(f"outputs[{k}]: {shown(o.name)} is not an output of {form.model}; expected some "
                                       f"of {list(outputs)}")
                wanted.append(outputs[o.name])
        first = next(iter(cols.values()))
        samples = first.shape[1] if first.ndim > 1 else 1
        # The version chosen here (by version, label or the policy's split) is the one the typed call runs.
        return form, rt, form.request(cols, pb.ModelSelector(version=rt.version)), samples, wanted

    # ------------------------------------------------------------ health and metadata (the event loop)

    async def ServerLive(self, request: v2.ServerLiveRequest, context: Any) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=self.health(LIVENESS))

    async def ServerReady(self, request: v2.ServerReadyRequest, context: Any) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self.health(""))

    async def ModelReady(self, request: v2.ModelReadyRequest, context: Any) -> v2.ModelReadyResponse:
        if not request.version:
            return v2.ModelReadyResponse(ready=self.health(request.name))
        loaded = request.version in self.repo.loaded().get(request.name, {})
        return v2.ModelReadyResponse(ready=loaded and self.health(LIVENESS))

    async def ServerMetadata(self, request: v2.ServerMetadataRequest, context: Any) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=[])

    async def ModelMetadata(self, request: v2.ModelMetadataRequest, context: Any) -> v2.ModelMetadataResponse:
        form = FORMS.get(request.name)
        if form is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"name: unknown model {shown(request.name)}, expected one "
                                                           f"of {list(MODEL_KINDS)}")
        try:
            rt = self.repo.get(form.model, request.version)
        except InferenceError as e:
            await context.abort(e.code, _selection_message(e).replace("model_version:", "version:"))
        Meta = v2.ModelMetadataResponse.TensorMetadata
        versions = sorted(self.repo.loaded().get(form.model, {}), key=int)
        return v2.ModelMetadataResponse(
            name=form.model, versions=versions, platform=PLATFORM,
            inputs=[Meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in form.inputs(rt.meta)],
            outputs=[Meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in form.outputs(rt.meta)])


def handlers(repo: Repository, typed: Any, health_state: SharedHealth, pool: concurrent.futures.Executor,
             admission: Admission, metrics: Metrics) -> grpc.GenericRpcHandler:
    """The V2 service's handlers for the inference port's aio server."""
    servicer = V2Servicer(repo, typed, metrics, lambda service: health_state.get(service) == SERVING)
    methods = {}
    for method in v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        request_cls = getattr(v2, method.input_type.name)
        response_cls = getattr(v2, method.output_type.name)
        if method.name == "ModelInfer":
            behaviour = threaded_handler("ModelInfer", servicer.ModelInfer, pool, admission, metrics)
            deserializer = _parse_infer
        else:
            behaviour, deserializer = getattr(servicer, method.name), request_cls.FromString
        methods[method.name] = grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=deserializer, response_serializer=response_cls.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)
