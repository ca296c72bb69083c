"""The admin servicer: list, load, unload, promote, roll back and split, over the models' policy files (where
they live: policy.PolicyStore). Served on its own port (server.py), never on the inference port. A refused
operation changes nothing: input is checked before anything is written."""

from __future__ import annotations

import math
from typing import Callable

from dwcp_inference import MODEL_KINDS
from dwcp_inference.api import admin_pb2 as apb
from dwcp_inference.api import admin_pb2_grpc as apb_grpc

from .audit import audited
from .errors import InvalidInput, ModelNotFound
from .outcomes import OutcomeTracker
from .policy import STAGES, Policy
from .repository import Repository
from .servicers import rpc


class AdminServicer(apb_grpc.AdminServiceServicer):
    ADMIN_RPCS = True  # servicers.rpc records these in dwcp_inference_admin_requests_total

    def __init__(self, repo: Repository, outcomes: OutcomeTracker, metrics, on_change: Callable[[], None]):
        self.repo = repo
        self.outcomes = outcomes
        self.metrics = metrics
        self.on_change = on_change

    def status(self, model: str) -> apb.ModelStatus:
        versions = self.repo.loaded().get(model, {})
        policy = self.repo.policies().get(model, Policy())
        serving = self.repo.serving().get(model)
        labels_of: dict[str, list[str]] = {}
        for label, version in policy.labels.items():
            labels_of.setdefault(version, []).append(label)
        out = apb.ModelStatus(name=model, labels=policy.labels, split=policy.split, keep_latest=policy.keep_latest,
                              policy_error=self.repo.policy_error(model), pinned=policy.pinned)
        rows = []
        for version, rt in versions.items():
            live, count = self.outcomes.live(model, version)
            rows.append(apb.VersionStatus(
                version=version, state="serving" if rt is serving else "loaded",
                labels=sorted(labels_of.get(version, [])),
                framework=f"{rt.meta.framework.get('name', '')} {rt.meta.framework.get('version', '')}".strip(),
                created_at=str(rt.meta.training.get("created_at", "")),
                data_source=str(rt.meta.training.get("data_source", "")), live_accuracy=live, outcomes=count,
                stage=policy.stages.get(version, "")))
        rows += [apb.VersionStatus(version=r.version, state="refused", reason=r.reason,
                                   labels=sorted(labels_of.get(r.version, [])), stage=policy.stages.get(r.version, ""))
                 for r in self.repo.refused if r.model == model]
        out.versions.extend(sorted(rows, key=lambda r: int(r.version), reverse=True))
        out.shadow.extend(self._comparisons(model))
        return out

    def _comparisons(self, model: str) -> list[apb.ShadowComparison]:
        shadow = getattr(self.outcomes, "shadow", None)
        return [apb.ShadowComparison(**c) for c in (shadow.comparisons(model) if shadow else [])]

    def _changed(self, model: str) -> apb.ModelStatus:
        self.on_change()  # the server's refresh, which also releases what unloaded versions held
        return self.status(model)

    @staticmethod
    def _check(model: str) -> None:
        if model not in MODEL_KINDS:
            raise ModelNotFound(f"model: unknown model {model!r}, expected one of {list(MODEL_KINDS)}")

    @rpc
    def ListModels(self, request: apb.ListModelsRequest, context) -> apb.ListModelsResponse:
        names = [request.model] if request.model else list(MODEL_KINDS)
        for name in names:
            self._check(name)
        return apb.ListModelsResponse(models=[self.status(m) for m in names])

    @audited("reload")
    @rpc
    def Reload(self, request: apb.ReloadRequest, context) -> apb.ReloadResponse:
        changed = self.repo.reload()
        self.on_change()
        return apb.ReloadResponse(changed=changed, models=[self.status(m) for m in MODEL_KINDS])

    @audited("load")
    @rpc
    def LoadVersion(self, request: apb.VersionRequest, context) -> apb.ModelStatus:
        self._check(request.model)
        if not (request.version.isdigit() and (self.repo.root / request.model / request.version).is_dir()):
            raise ModelNotFound(f"version: {request.model} has no version {request.version!r} on disk")
        reason = self.repo.verify(request.model, request.version)  # before the pin: a refused one is not pinned
        if reason:
            raise InvalidInput(f"version: {request.model} version {request.version} was refused: {reason}")

        def pin(p: Policy) -> None:
            p.disabled = [v for v in p.disabled if v != request.version]
            p.pinned = sorted(set(p.pinned) | {request.version}, key=int)

        self.repo.change_policy(request.model, pin)
        if request.version not in self.repo.loaded().get(request.model, {}):
            reason = next((r.reason for r in self.repo.refused
                           if (r.model, r.version) == (request.model, request.version)), "not loaded")
            raise InvalidInput(f"version: {request.model} version {request.version} was refused: {reason}")
        return self._changed(request.model)

    @audited("unload")
    @rpc
    def UnloadVersion(self, request: apb.VersionRequest, context) -> apb.ModelStatus:
        self._check(request.model)

        def disable(p: Policy) -> None:
            if request.version in p.labels.values():
                raise InvalidInput(f"version: {request.version} carries labels "
                                   f"{[k for k, v in p.labels.items() if v == request.version]}; move them first")
            p.pinned = [v for v in p.pinned if v != request.version]
            p.disabled = sorted(set(p.disabled) | {request.version}, key=int)

        self.repo.change_policy(request.model, disable)
        return self._changed(request.model)

    @audited("promote")
    @rpc
    def Promote(self, request: apb.PromoteRequest, context) -> apb.ModelStatus:
        self._check(request.model)
        if not request.label:
            raise InvalidInput("label: expected a label such as stable or canary, got none")
        if request.version not in self.repo.loaded().get(request.model, {}):
            raise InvalidInput(f"version: {request.model} version {request.version!r} is not loaded "
                               "(load it first; a refused version cannot be promoted)")
        self.repo.change_policy(request.model, lambda p: p.promote(request.label, request.version))
        return self._changed(request.model)

    @audited("rollback")
    @rpc
    def Rollback(self, request: apb.RollbackRequest, context) -> apb.ModelStatus:
        self._check(request.model)
        self.repo.change_policy(request.model, lambda p: p.rollback(request.label or "stable"))
        return self._changed(request.model)

    @audited("unlabel")
    @rpc
    def RemoveLabel(self, request: apb.RemoveLabelRequest, context) -> apb.ModelStatus:
        self._check(request.model)
        if not request.label:
            raise InvalidInput("label: expected the label to remove, got none")
        self.repo.change_policy(request.model, lambda p: p.remove_label(request.label))
        return self._changed(request.model)

    @audited("split")
    @rpc
    def SetSplit(self, request: apb.SetSplitRequest, context) -> apb.ModelStatus:
        self._check(request.model)
        weights = dict(request.weights)
        for label, w in weights.items():
            if not math.isfinite(w) or w < 0:
                raise InvalidInput(f"weights[{label}]: expected a finite number >= 0, got {w}")

        def split(p: Policy) -> None:
            missing = [lb for lb in weights if lb not in p.labels]
            if missing:
                raise InvalidInput(f"weights: labels {missing} point at no version (labels: {p.labels})")
            loaded = self.repo.loaded().get(request.model, {})
            if weights and not Policy(labels=p.labels, split=weights).split_weights(loaded):
                raise InvalidInput(f"weights: the labels on loaded versions ({sorted(loaded, key=int)}) must "
                                   f"weigh more than 0 in total, got {weights} (labels: {p.labels})")
            p.split = weights

        self.repo.change_policy(request.model, split)
        return self._changed(request.model)

    @audited("stage")
    @rpc
    def SetStage(self, request: apb.SetStageRequest, context) -> apb.ModelStatus:
        self._check(request.model)
        if request.stage not in STAGES:
            raise InvalidInput(f"stage: expected one of {[s for s in STAGES if s]}, got {request.stage!r}")
        if not (request.version.isdigit() and (self.repo.root / request.model / request.version).is_dir()):
            raise ModelNotFound(f"version: {request.model} has no version {request.version!r} on disk")
        reason = self.repo.verify(request.model, request.version) if request.stage in ("staging", "production") \
            else ""
        if reason:  # before the change: a refused version does not enter staging or production
            raise InvalidInput(f"version: {request.model} version {request.version} was refused: {reason}")
        self.repo.change_policy(request.model, lambda p: p.set_stage(request.version, request.stage))
        return self._changed(request.model)

    @rpc
    def GetShadowStats(self, request: apb.ShadowStatsRequest, context) -> apb.ShadowStatsResponse:
        if request.model:
            self._check(request.model)
        return apb.ShadowStatsResponse(comparisons=self._comparisons(request.model))
