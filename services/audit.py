"""The admin audit trail: one line on the `dwcp_inference.audit` logger for every admin action and every refused
admin call, saying who (peer address; the client certificate's subject under mutual TLS), what (rpc, model,
arguments), the result (status code) and the model's policy before and after."""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from typing import Any, Callable

import grpc
from google.protobuf.json_format import MessageToDict

log = logging.getLogger("dwcp_inference.audit")
ACTIONS = {"Reload": "reload", "LoadVersion": "load", "UnloadVersion": "unload", "Promote": "promote",
           "Rollback": "rollback", "RemoveLabel": "unlabel", "SetSplit": "split", "ListModels": "list",
           "SetStage": "stage", "GetShadowStats": "shadow"}


def caller(context: grpc.ServicerContext) -> dict[str, str]:
    """Who called: the peer address and, when the client presented a certificate, its subject."""
    who = {"peer": context.peer()}
    try:
        auth = context.auth_context() or {}
    except Exception:  # no auth context on this transport
        auth = {}
    for key, field in (("x509_subject", "subject"), ("x509_common_name", "common_name")):
        if auth.get(key):
            who[field] = b",".join(auth[key]).decode(errors="replace")
    return who


def record(action: str, context: grpc.ServicerContext, code: grpc.StatusCode, details: str = "",
           **fields: Any) -> None:
    ok = code == grpc.StatusCode.OK
    log.log(logging.INFO if ok else logging.WARNING, "admin %s %s: %s%s", action, fields.get("model") or "-",
            code.name, "" if ok else f" ({details})",
            extra={"audit": True, "action": action, **caller(context), **fields, "code": code.name,
                   **({} if ok else {"details": details})})


def refused(method: str, raw: bytes, context: grpc.ServicerContext, code: grpc.StatusCode, details: str,
            **fields: Any) -> None:
    """A call refused before it reached the servicer (e.g. by the token check): its request, still bytes, is
    parsed here for the audit line."""
    from dwcp_inference.api import admin_pb2

    service, _, rpc = method.rpartition("/")
    arguments: dict[str, Any] = {}
    try:
        spec = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].methods_by_name[rpc]
        request = getattr(admin_pb2, spec.input_type.name).FromString(raw)
        arguments = MessageToDict(request, preserving_proto_field_name=True)
    except Exception:  # another service, or bytes that do not parse: the line still says who and what
        pass
    model = arguments.pop("model", "")
    record(ACTIONS.get(rpc, rpc), context, code, details, rpc=rpc, model=model, arguments=arguments, **fields)


def _policy(repo: Any, model: str) -> dict[str, Any] | None:
    try:
        policies = repo.policies()
        if model:
            return asdict(policies[model]) if model in policies else None
        return {name: asdict(p) for name, p in policies.items()}
    except Exception:  # the audit line must not fail the call
        return None


def audited(action: str) -> Callable[[Callable], Callable]:
    """Decorates an admin servicer method (above its @rpc): logs the call's audit line once it has answered,
    with the policy of the model named in the request (every model's when it names none) before and after."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            model = getattr(request, "model", "")
            before = _policy(self.repo, model)
            code, details = grpc.StatusCode.OK, ""
            try:
                response = method(self, request, context)
                code = _code(context) or grpc.StatusCode.OK
                return response
            except BaseException as e:  # context.abort raises once the code is set
                code, details = _code(context) or grpc.StatusCode.UNKNOWN, _details(context) or str(e)
                raise
            finally:
                arguments = MessageToDict(request, preserving_proto_field_name=True)
                arguments.pop("model", None)
                record(action, context, code, details, rpc=method.__name__, model=model, arguments=arguments,
                       policy_before=before, policy_after=_policy(self.repo, model))

        return wrapper

    return wrap


def _code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    try:
        return context.code()
    except Exception:
        return None


def _details(context: grpc.ServicerContext) -> str:
    try:
        details = context.details()
    except Exception:
        return ""
    return details.decode(errors="replace") if isinstance(details, bytes) else (details or "")
