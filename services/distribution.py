"""ModelDistribution (protos/dwcp/inference/v1/distribution.proto): the server is where model versions come from.

GetModel streams one loaded version's files (a manifest with each file's size and sha256, then the bytes in chunks);
WatchModels tells what is loaded, labelled and split, at once and after every change. Both are async handlers on the
inference port's event loop (transport.py): a watch costs no thread while it waits. A GetModel holds one of the
inference calls admitted at once (`max_concurrent_rpcs`) while it streams; watches have their own bound
(`max_watchers`), since they live for as long as the client does.

Changes are noticed where the rest of the server notices them: `notify` is called after every rescan that changed
something and after every admin change (server.Running.refresh), which covers versions published or removed on disk,
promote/rollback/split through the admin API, and policies another replica wrote into a shared `--state-dir`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from pathlib import Path
from typing import AsyncIterator, Iterable

import grpc
from prometheus_client import Gauge

from dwcp_inference import MODEL_KINDS, metadata
from dwcp_inference.api import distribution_pb2 as dpb
from dwcp_inference.api import inference_pb2 as pb

from .errors import InferenceError, InvalidInput, ModelNotFound, shown
from .metrics import Metrics
from .repository import Repository
from .runtime import ModelRuntime
from .transport import Admission

log = logging.getLogger(__name__)

SERVICE = dpb.DESCRIPTOR.services_by_name["ModelDistribution"]
SERVICE_NAME = SERVICE.full_name
CHUNK_BYTES = 1 << 20
# A version's own files, in the order they are sent: nothing else in (or outside) its directory is ever read.
VERSION_FILES = (metadata.METADATA_FILE, metadata.MODEL_FILE)
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# How long shutdown waits for watches to take their UNAVAILABLE before cutting them.
CLOSE_SECONDS = 2.0
# A GetModel whose client takes no chunk for this long is cut, and its place among the calls admitted freed: a
# client that opens streams and never reads would otherwise hold --max-concurrent-rpcs places for ever.
STALL_SECONDS = 30.0


class VersionGone(InferenceError):
    """The version streamed was unloaded, or its files changed, while it streamed: retry."""

    code = grpc.StatusCode.ABORTED


class ShuttingDown(InferenceError):
    code = grpc.StatusCode.UNAVAILABLE


class TooManyWatchers(InferenceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TooManyCalls(InferenceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ModelDistribution:
    """The async servicer. Everything but `notify` runs on the event loop `loop` (no locks)."""

    def __init__(self, repo: Repository, metrics: Metrics, admission: Admission, max_watchers: int,
                 loop: asyncio.AbstractEventLoop, chunk_bytes: int = CHUNK_BYTES):
        self.repo, self.metrics, self.admission = repo, metrics, admission
        self.max_watchers = max(max_watchers, 1)
        self.chunk_bytes = max(chunk_bytes, 1)
        self._loop = loop
        self._watchers: set[_Watcher] = set()
        self._state: dict[str, dpb.ModelState] = {}
        self._closing = False
        self._files = _SharedFiles()
        self.open_watches = Gauge("dwcp_inference_open_watches", "WatchModels streams open now.",
                                  registry=metrics.registry)

    # ------------------------------------------------------------------ changes

    def notify(self) -> None:
        """The repository may have changed (any thread): tell the watches whose models did."""
        try:
            self._loop.call_soon_threadsafe(self._changed)
        except RuntimeError:  # the loop has stopped with the server
            pass

    def _changed(self) -> None:
        new = model_states(self.repo)
        changed = {m for m in set(new) | set(self._state) if new.get(m) != self._state.get(m)}
        self._state = new
        if changed:
            for watcher in self._watchers:
                watcher.mark(changed)

    async def close(self) -> None:
        """End every watch with UNAVAILABLE (reconnect) before the server drains, so shutdown never waits its grace
        period for them; a watch that cannot take its status in CLOSE_SECONDS is cut."""
        self._closing = True
        for watcher in self._watchers:
            watcher.close()
        deadline = self._loop.time() + CLOSE_SECONDS
        while self._watchers and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        for watcher in list(self._watchers):
            if watcher.task is not None:
                watcher.task.cancel()

    # ------------------------------------------------------------------ RPCs

    async def GetModel(self, request: dpb.GetModelRequest, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[dpb.ModelFileChunk]:
        code, slot, watchdog, files = grpc.StatusCode.OK, None, None, None
        try:
            if not self.admission.enter():
                raise TooManyCalls(f"GetModel: the server is at its limit of {self.admission.limit} calls at once; "
                                   f"retry later")
            slot = _Slot(self.admission)
            rt = self._resolve(request)
            files = await self._files.acquire(rt)
            watchdog = _Watchdog(self._loop, STALL_SECONDS, asyncio.current_task(), slot, rt, context)
            yield dpb.ModelFileChunk(manifest=dpb.VersionManifest(
                model=pb.ModelRef(name=rt.name, version=rt.version),
                files=[dpb.VersionFile(name=f.name, size=len(f.data), sha256=f.sha256) for f in files]))
            for f in files:
                for offset in range(0, max(len(f.data), 1), self.chunk_bytes):
                    watchdog.reset()  # the client took the last chunk
                    if not self._still_loaded(rt):
                        raise VersionGone(f"{rt.name} version {rt.version} was unloaded while it streamed; retry "
                                          f"(the watch tells what is loaded now)")
                    yield dpb.ModelFileChunk(data=dpb.FileData(
                        file=f.name, offset=offset, data=f.data[offset:offset + self.chunk_bytes]))
        except InferenceError as e:
            code = e.code
            await context.abort(code, str(e))
        except (asyncio.CancelledError, GeneratorExit):  # the client went away, or stopped reading (the watchdog)
            code = grpc.StatusCode.DEADLINE_EXCEEDED if watchdog and watchdog.fired else grpc.StatusCode.CANCELLED
            raise
        except Exception:
            log.exception("GetModel failed")
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, "GetModel: internal error, see the server log")
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if files is not None:
                self._files.release(rt)
            if slot is not None:
                slot.release()
            self._count("GetModel", code)

    async def WatchModels(self, request: dpb.WatchModelsRequest, context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[dpb.ModelUpdate]:
        code, watcher = grpc.StatusCode.OK, None
        try:
            wanted = watched_models(request.models)
            if self._closing:
                raise ShuttingDown("WatchModels: the server is shutting down; reconnect")
            if len(self._watchers) >= self.max_watchers:
                raise TooManyWatchers(f"WatchModels: the server is at its limit of {self.max_watchers} watches "
                                      f"(--max-watchers); retry later or on another replica")
            watcher = _Watcher(wanted, asyncio.current_task())
            self._watchers.add(watcher)
            self.open_watches.inc()
            self._changed()  # the state now, and any change not yet told
            first = sorted(wanted) if wanted is not None else sorted(self._state)
            yield dpb.ModelUpdate(models=[self._state_of(m) for m in first])
            while True:
                await watcher.wake.wait()
                watcher.wake.clear()
                if watcher.closed:
                    raise ShuttingDown("WatchModels: the server is shutting down; reconnect")
                pending, watcher.pending = watcher.pending, set()
                yield dpb.ModelUpdate(models=[self._state_of(m) for m in sorted(pending)])
        except InferenceError as e:
            code = e.code
            await context.abort(code, str(e))
        except (asyncio.CancelledError, GeneratorExit):  # the client went away
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            log.exception("WatchModels failed")
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, "WatchModels: internal error, see the server log")
        finally:
            if watcher is not None:
                self._watchers.discard(watcher)
                self.open_watches.dec()
            self._count("WatchModels", code)

    # ------------------------------------------------------------------ helpers

    def _resolve(self, request: dpb.GetModelRequest) -> ModelRuntime:
        if not request.model:
            raise InvalidInput("model: required, expected one of " + str(list(MODEL_KINDS)))
        if request.model not in MODEL_KINDS:  # not echoed whole: a huge name would not fit in the status
            raise ModelNotFound(f"model: unknown model {shown(request.model)}, expected one of {list(MODEL_KINDS)}")
        version, label = request.selector.version, request.selector.label
        if version and label:
            raise InvalidInput("selector: give a version or a label, not both")
        if version and not (version.isascii() and version.isdigit() and len(version) <= 20):
            raise InvalidInput(f"selector.version: expected a version of digits such as \"3\" (at most 20), got "
                               f"{shown(version)}")
        if label and not _LABEL.match(label):
            raise InvalidInput(f"selector.label: expected letters, digits, '_', '.' or '-' (at most 64), "
                               f"got {shown(label)}")
        try:
            return self.repo.get(request.model, version, label)
        except InferenceError as e:  # the repository names the typed API's fields
            raise type(e)(str(e).replace("model.version:", "selector.version:").replace(
                "model.label:", "selector.label:")) from None
        except KeyError:  # a label the policy does not define (the repository's own lookup)
            raise ModelNotFound(f"selector.label: {request.model} has no label {label!r} on a loaded version") \
                from None

    def _still_loaded(self, rt: ModelRuntime) -> bool:
        return self.repo.loaded().get(rt.name, {}).get(rt.version) is rt

    def _state_of(self, model: str) -> dpb.ModelState:
        return self._state.get(model) or dpb.ModelState(name=model)

    def _count(self, rpc: str, code: grpc.StatusCode) -> None:
        self.metrics.child(self.metrics.requests, rpc, code.name).inc()


class _Watcher:
    def __init__(self, models: frozenset[str] | None, task: asyncio.Task | None):
        self.models, self.task = models, task
        self.pending: set[str] = set()  # models changed since the last message: coalesced, so never a backlog
        self.wake = asyncio.Event()
        self.closed = False

    def mark(self, changed: set[str]) -> None:
        mine = changed if self.models is None else changed & self.models
        if mine:
            self.pending |= mine
            self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class _Slot:
    """One admitted GetModel's place: given back once, by the stream's end or by its watchdog."""

    def __init__(self, admission: Admission):
        self.admission, self.held = admission, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission.leave()


class _Watchdog:
    """Cuts a GetModel (cancels its task, frees its place) when its client takes no chunk for `seconds`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, task: asyncio.Task | None, slot: _Slot,
                 rt: ModelRuntime, context: grpc.aio.ServicerContext):
        self.loop, self.seconds, self.task, self.slot, self.rt = loop, seconds, task, slot, rt
        self.context = context
        self.fired = False
        self._timer = loop.call_later(seconds, self._fire)

    def reset(self) -> None:
        self._timer.cancel()
        self._timer = self.loop.call_later(self.seconds, self._fire)

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        log.warning("GetModel %s version %s: the client took no data for %.0f s; stream cut", self.rt.name,
                    self.rt.version, self.seconds)
        self.slot.release()
        asyncio.ensure_future(self._abort())

    async def _abort(self) -> None:
        try:
            await self.context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"GetModel: no data taken for "
                                     f"{self.seconds:.0f} s; stream cut")
        except BaseException:  # the AbortError abort raises, here, outside the handler
            pass
        if self.task is not None:
            self.task.cancel()


class _SharedFiles:
    """The files of the versions being streamed, read once and shared by every stream of a version (on the event
    loop, no lock): memory is a version's size per version streamed, not per stream."""

    def __init__(self):
        self._read: dict[int, tuple[ModelRuntime, asyncio.Future, int]] = {}

    async def acquire(self, rt: ModelRuntime) -> list[VersionFileBytes]:
        entry = self._read.get(id(rt))
        if entry is None or entry[0] is not rt:
            entry = (rt, asyncio.ensure_future(asyncio.to_thread(read_version, rt)), 0)
        self._read[id(rt)] = (entry[0], entry[1], entry[2] + 1)
        try:
            return await asyncio.shield(entry[1])
        except BaseException:
            self.release(rt)
            raise

    def release(self, rt: ModelRuntime) -> None:
        entry = self._read.get(id(rt))
        if entry is None or entry[0] is not rt:
            return
        if entry[2] <= 1:
            del self._read[id(rt)]
        else:
            self._read[id(rt)] = (entry[0], entry[1], entry[2] - 1)


class VersionFileBytes:
    def __init__(self, name: str, data: bytes):
        self.name, self.data = name, data
        self.sha256 = hashlib.sha256(data).hexdigest()


def read_version(rt: ModelRuntime) -> list[VersionFileBytes]:
    """The version's files, read whole (so the manifest's checksums are those of the bytes sent). VersionGone when
    model.onnx is no longer the one that was verified and loaded (changed in place since)."""
    vdir = Path(rt.path)
    try:
        files = [VersionFileBytes(name, (vdir / name).read_bytes()) for name in VERSION_FILES]
    except OSError as e:
        raise VersionGone(f"{rt.name} version {rt.version}: cannot read {e.filename}: {e.strerror or e}; retry") \
            from None
    model = next(f for f in files if f.name == metadata.MODEL_FILE)
    if model.sha256 != rt.meta.sha256:
        raise VersionGone(f"{rt.name} version {rt.version}: {metadata.MODEL_FILE} changed on disk since it was "
                          f"loaded; retry once the server has rescanned")
    return files


def watched_models(names: Iterable[str]) -> frozenset[str] | None:
    """The models a watch asks for (None: every one); unknown names are NOT_FOUND."""
    names = list(names)
    for i, name in enumerate(names):
        if name not in MODEL_KINDS:
            raise ModelNotFound(f"models[{i}]: unknown model {shown(name)}, expected some of {list(MODEL_KINDS)}")
    return frozenset(names) or None


def model_states(repo: Repository) -> dict[str, dpb.ModelState]:
    """What a client needs to resolve selectors as the server does, for every model the repository holds."""
    loaded, policies = repo.loaded(), repo.policies()
    out = {}
    for model, versions in loaded.items():
        policy = policies.get(model)
        labels = dict(policy.labels) if policy else {}
        ordered = sorted(versions, key=int)
        default = ""
        if ordered:
            default = labels["stable"] if labels.get("stable") in versions else ordered[-1]
        out[model] = dpb.ModelState(
            name=model, versions=[dpb.LoadedVersion(version=v, model_sha256=versions[v].meta.sha256) for v in ordered],
            labels=labels, split=dict(policy.split) if policy else {}, default_version=default,
            history={lb: dpb.LabelHistory(versions=vs) for lb, vs in (policy.history if policy else {}).items()})
    return out


def chunk_size(max_message_bytes: int) -> int:
    """CHUNK_BYTES, or less when the server's largest message (--max-message-bytes) would not hold one."""
    return max(1, min(CHUNK_BYTES, max_message_bytes - 1024))


def handlers(servicer: ModelDistribution) -> grpc.GenericRpcHandler:
    """The service's handlers for a grpc.aio server."""
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "GetModel": grpc.unary_stream_rpc_method_handler(
            servicer.GetModel, request_deserializer=dpb.GetModelRequest.FromString,
            response_serializer=dpb.ModelFileChunk.SerializeToString),
        "WatchModels": grpc.unary_stream_rpc_method_handler(
            servicer.WatchModels, request_deserializer=dpb.WatchModelsRequest.FromString,
            response_serializer=dpb.ModelUpdate.SerializeToString),
    })
