"""`dwcp-inference models ...`: the admin API from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cli_common import MODEL_HELP, add_tls_flags, explain, model_name, open_channel


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list and operate model versions through a server's admin API",
                       description="List and operate model versions through the admin API (its own port, "
                                   f"loopback by default). MODEL is one of {MODEL_HELP}.")
    p.add_argument("--admin", default="127.0.0.1:50052", metavar="HOST:PORT",
                   help="the server's admin address (default %(default)s)")
    p.add_argument("--token", default=os.environ.get("DWCP_INFERENCE_ADMIN_TOKEN", ""),
                   help="bearer token of the admin API (default: $DWCP_INFERENCE_ADMIN_TOKEN)")
    add_tls_flags(p)
    ops = p.add_subparsers(dest="op", required=True, metavar="OPERATION")
    ls = ops.add_parser("list", help="models, versions, states, labels, live accuracy")
    ls.add_argument("model", nargs="?", default=None, type=model_name, metavar="MODEL",
                    help="one model (default: all)")
    ls.add_argument("--json", action="store_true", help="print the listing as JSON")
    ops.add_parser("reload", help="rescan the repository now")
    for name, text in (("load", "load and pin a version"), ("unload", "unload and disable a version")):
        o = ops.add_parser(name, help=text)
        o.add_argument("model", type=model_name, metavar="MODEL")
        o.add_argument("version")
    o = ops.add_parser("promote", help="point a label (default stable) at a version")
    o.add_argument("model", type=model_name, metavar="MODEL")
    o.add_argument("version")
    o.add_argument("--label", default="stable", help="default %(default)s")
    o = ops.add_parser("rollback", help="point a label (default stable) back at its previous version")
    o.add_argument("model", type=model_name, metavar="MODEL")
    o.add_argument("--label", default="stable", help="default %(default)s")
    o = ops.add_parser("unlabel", help="remove a label (not stable, not candidate, not one in the split)")
    o.add_argument("model", type=model_name, metavar="MODEL")
    o.add_argument("label")
    o = ops.add_parser("split", help="share default traffic between labels, e.g. stable=90 canary=10 "
                                     "(no weights: remove the split)")
    o.add_argument("model", type=model_name, metavar="MODEL")
    o.add_argument("weights", nargs="*", metavar="LABEL=WEIGHT")


def run(args: argparse.Namespace) -> int:
    import grpc

    from dwcp_inference.api import admin_pb2 as apb
    from dwcp_inference.api import admin_pb2_grpc as apb_grpc

    channel = open_channel(args.admin, args)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with channel:
        stub = _Authorized(apb_grpc.AdminServiceStub(channel), metadata)
        try:
            if args.op == "list":
                models = stub.ListModels(apb.ListModelsRequest(model=args.model or ""), timeout=10).models
            elif args.op == "reload":
                resp = stub.Reload(apb.ReloadRequest(), timeout=120)
                print(f"changed: {resp.changed}")
                models = resp.models
            elif args.op in ("load", "unload"):
                call = stub.LoadVersion if args.op == "load" else stub.UnloadVersion
                models = [call(apb.VersionRequest(model=args.model, version=args.version), timeout=120)]
            elif args.op == "promote":
                models = [stub.Promote(apb.PromoteRequest(model=args.model, label=args.label,
                                                          version=args.version), timeout=120)]
            elif args.op == "rollback":
                models = [stub.Rollback(apb.RollbackRequest(model=args.model, label=args.label), timeout=120)]
            elif args.op == "unlabel":
                models = [stub.RemoveLabel(apb.RemoveLabelRequest(model=args.model, label=args.label), timeout=120)]
            else:
                weights = {}
                for item in args.weights:
                    label, _, weight = item.partition("=")
                    try:
                        weights[label] = float(weight)
                    except ValueError:
                        print(f"split: expected LABEL=WEIGHT, got {item!r}", file=sys.stderr)
                        return 2
                models = [stub.SetSplit(apb.SetSplitRequest(model=args.model, weights=weights), timeout=120)]
        except grpc.RpcError as e:
            print(f"{args.op}: {explain(e, args)}", file=sys.stderr)
            return 1
    if getattr(args, "json", False):
        from google.protobuf.json_format import MessageToDict

        print(json.dumps([MessageToDict(m, preserving_proto_field_name=True) for m in models], indent=1))
        return 0
    for m in models:
        print(_format(m))
    return 0


def _format(m) -> str:
    head = f"{m.name}  keep_latest={m.keep_latest}"
    if m.labels:
        head += "  labels=" + ",".join(f"{k}->{v}" for k, v in sorted(m.labels.items()))
    if m.split:
        head += "  split=" + ",".join(f"{k}:{v:g}" for k, v in sorted(m.split.items()))
    lines = [head]
    if m.policy_error:
        lines.append(f"  policy refused, the last good one serves: {m.policy_error}")
    for v in m.versions:
        live = " ".join(f"{k}={x:.4g}" for k, x in sorted(v.live_accuracy.items()))
        extra = f"  {v.reason}" if v.reason else f"  {v.framework}  {v.created_at}  {v.data_source}"
        lines.append(f"  v{v.version:<4} {v.state:<8} {','.join(v.labels) or '-':<14}"
                     f"{(' stage: ' + v.stage) if v.stage else ''}"
                     f"{(' live: ' + live + f' ({v.outcomes} outcomes)') if live else ''}{extra}")
    for c in m.shadow:  # continuous training: the candidate against the versions that answered
        paired = (f"mean difference {c.mean_difference:+.3g} pp (sd {c.variance_difference ** 0.5:.3g})"
                  if m.name == "bandwidth_predictor" else
                  f"only champion right {c.only_champion_right}, only candidate right {c.only_candidate_right}")
        lines.append(f"  shadow: v{c.candidate} beside v{c.champion or '-'}: {c.outcomes} paired outcomes, {paired}; "
                     f"calls shadowed {c.shadowed}, skipped {c.skipped}, failed {c.failed}, "
                     f"unmatched outcomes {c.unmatched}")
    return "\n".join(lines)


class _Authorized:
    """The admin stub with the bearer token on every call."""

    def __init__(self, stub, metadata: list[tuple[str, str]]):
        self.stub, self.metadata = stub, metadata

    def __getattr__(self, name: str):
        method = getattr(self.stub, name)
        return lambda request, **kw: method(request, metadata=self.metadata, **kw)
