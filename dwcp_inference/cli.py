"""`dwcp-inference`: serve, train, verify a repository, check health. Training imports are deferred so the
server needs none of the train extra."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own flags: dwcp-inference bench --help
        from dwcp_inference.bench.suite import main as bench

        return bench(argv[1:])
    parser = argparse.ArgumentParser(prog="dwcp-inference", description=__doc__.splitlines()[0].strip("`"))
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _train_parser(sub)
    e = sub.add_parser("evaluate", help="run a served model version on held-out data beside the baselines",
                       description="Evaluate a model version of a repository, through the server's runtime, on "
                                   "the held-out part of DATA (the split training used), beside the baselines. "
                                   "Needs the train extra.")
    e.add_argument("model", choices=["bandwidth", "compression", "reliability", "consensus"])
    e.add_argument("--repository", type=Path, required=True)
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--format", choices=["csv", "mahimahi", "payloads", "nab"], default="csv",
                   help="bandwidth: csv or mahimahi; compression: csv or payloads; the detectors: nab")
    e.add_argument("--interval-ms", type=int, default=1000, help="mahimahi: throughput interval (default 1000)")
    e.add_argument("--version", default="", help="default: the version the server would serve")
    e.add_argument("--json", action="store_true", help="print the figures as JSON")
    t = sub.add_parser("tune", help="search hyperparameters with Optuna on validation data",
                       description="Search a model's hyperparameters with Optuna, judged on validation data. "
                                   "Several machines can share one study through --storage.")
    t.add_argument("model", choices=["bandwidth", "compression", "reliability", "consensus"])
    t.add_argument("--trials", type=int, default=20)
    t.add_argument("--storage", default="sqlite:///tune.db",
                   help="Optuna storage URL (default %(default)s; postgresql://... to share a study)")
    t.add_argument("--study", default="", help="study name (default dwcp-MODEL)")
    t.add_argument("--data", type=Path)
    t.add_argument("--format", choices=["csv", "mahimahi", "payloads", "nab"], default="csv")
    t.add_argument("--interval-ms", type=int, default=1000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quick", action="store_true")
    t.add_argument("--publish", type=Path, metavar="REPO", help="retrain with the best parameters and publish")
    z = sub.add_parser("fuzz", help="send generated bad requests to a server and check every answer",
                       description="Send COUNT generated bad requests through a real channel; each answer must "
                                   "carry the right status and name the field. Exit 1 on any wrong answer.")
    z.add_argument("--target", default="127.0.0.1:50051")
    z.add_argument("--count", type=int, default=10000)
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--pid", type=int, help="the server's process id, to follow its memory")
    z.add_argument("--json", action="store_true")
    k = sub.add_parser("soak", help="mixed traffic and hot swaps against a server; memory, files, errors, latency",
                       description="Run a server (on a copy of the repository) under mixed traffic while new "
                                   "versions are published; print its memory, open files, errors and latency.")
    k.add_argument("--minutes", type=float, default=30)
    k.add_argument("--interval", type=float, default=60, help="seconds between report lines (default 60)")
    k.add_argument("--swaps", type=int, default=50, help="versions published during the run (default 50)")
    k.add_argument("--clients", type=int, default=4)
    k.add_argument("--repository", type=Path, help="default: the bundled models")
    k.add_argument("--outcome-capacity", type=int, default=100_000,
                   help="the server's remembered predictions (default %(default)s)")
    k.add_argument("--json", action="store_true")
    from dwcp_inference import admin_cli

    admin_cli.add_parser(sub)
    v = sub.add_parser("verify", help="load and verify every version of a repository, as the server would")
    v.add_argument("--repository", type=Path, help="model repository (default: the bundled models)")
    i = sub.add_parser(
        "import", help="import a Keras, scikit-learn, PyTorch or ONNX model as a new version",
        description="Convert a model trained elsewhere to ONNX, check it fits the model kind, compare it with its "
                    "framework on generated inputs, and publish it as a new version (docs/import.md). Needs the "
                    "extra of its framework: keras, sklearn or torch. Loading a pickle (scikit-learn's joblib or "
                    "pickle files, a pickled torch module) runs code from the file: it is refused unless you pass "
                    "--trust-pickle.")
    i.add_argument("model", choices=["bandwidth", "reliability", "consensus"])
    i.add_argument("--from", dest="source", required=True, choices=["keras", "sklearn", "torch", "onnx"])
    i.add_argument("path", type=Path, help="the model: .keras/.h5 or SavedModel directory, joblib/pickle, "
                                            "TorchScript .pt, .onnx")
    i.add_argument("--repository", type=Path, required=True, help="model repository to publish into")
    i.add_argument("--features", type=Path, required=True,
                   help="input columns in order: a JSON list, {\"inputs\": [...], \"outputs\": [...]}, or one per line")
    i.add_argument("--scaler", type=Path, help="the feature scaling it was trained with, as JSON (mean and scale, "
                                               "or min and max, per feature)")
    i.add_argument("--no-scaler", action="store_true", help="the model takes raw values")
    i.add_argument("--window", type=int, help="samples per window (bandwidth, consensus)")
    i.add_argument("--threshold", type=float, help="a detector's decision threshold on its score")
    i.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a pickle, which runs code from the file: only for files you trust")
    sub.add_parser("bench", help="our server beside the Python and Go floors and the model in-process (ghz; "
                                 "dwcp-inference bench --help)", add_help=False)
    h = sub.add_parser("health", help="ask a server's grpc.health.v1 service; exit 1 unless SERVING")
    h.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT (default %(default)s)")
    h.add_argument("--service", default="", help="a model name, or empty for the whole server")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("DWCP_INFERENCE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return {"serve": _serve, "train": _train, "evaluate": _evaluate, "verify": _verify, "health": _health,
            "models": admin_cli.run, "tune": _tune, "fuzz": _fuzz, "soak": _soak, "import": _import}[args.command](args)


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    from dwcp_inference.services.settings import Settings

    p = sub.add_parser("serve", help="serve a model repository over gRPC",
                       description="Serve a model repository over gRPC. Every flag also reads an environment "
                                   "variable, DWCP_INFERENCE_<FLAG> (e.g. DWCP_INFERENCE_PORT).")
    defaults = Settings()
    for f in fields(Settings):
        env = Settings.env_name(f.name)
        default = os.environ.get(env, getattr(defaults, f.name))
        kind = {int: int, float: float}.get(type(getattr(defaults, f.name)), str)
        if f.name == "repository":
            kind, help_default = Path, "the bundled models"
        elif f.name in ("tls_cert", "tls_key", "tls_client_ca"):
            kind, help_default = Path, "none"
        else:
            help_default = str(getattr(defaults, f.name))
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind,
                       default=kind(default) if default is not None else None,
                       help=f"env {env} (default: {help_default})")


def _serve(args: argparse.Namespace) -> int:
    from dwcp_inference.services.server import serve
    from dwcp_inference.services.settings import Settings
    from dwcp_inference.services.workers import supervise

    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    (supervise if settings.workers > 1 else serve)(settings)
    return 0


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train models, export them to ONNX and publish them into a repository",
                       description="Train, export (ONNX + metadata.json, parity-checked) and publish one model "
                                   "or all four. Needs the train extra: pip install 'dwcp-inference[train]'.")
    p.add_argument("model", choices=["bandwidth", "compression", "reliability", "consensus", "all"])
    p.add_argument("--out", type=Path, required=True, help="model repository to publish into")
    p.add_argument("--data", type=Path, help="CSV in the model's schema (docs/data.md); default: generated data")
    p.add_argument("--format", choices=["csv", "mahimahi", "payloads", "nab"], default="csv",
                   help="format of --data: csv (docs/data.md), mahimahi traces (bandwidth), a payload "
                        "corpus directory (compression), or NAB series with combined_windows.json (the "
                        "detectors) (default %(default)s)")
    p.add_argument("--interval-ms", type=int, default=1000,
                   help="mahimahi: throughput interval in milliseconds (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small data and few epochs (tests, smoke runs)")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="write the report here: report.md, report.json and plots")
    p.add_argument("--workers", type=int, default=2, help="models trained at once, each in its own process "
                                                          "(default %(default)s)")
    p.add_argument("--checkpoints", type=Path, metavar="DIR",
                   help="save the best weights of each neural model here as training goes (MODEL.pt)")
    p.add_argument("--force", action="store_true",
                   help="publish a model even when it misses its targets or loses to a baseline")


def _train(args: argparse.Namespace) -> int:
    try:
        from dwcp_inference.training import jobs
    except ImportError as e:
        print(f"training needs the train extra (pip install 'dwcp-inference[train]'): {e}", file=sys.stderr)
        return 2
    from dwcp_inference.training.common import GateError
    from dwcp_inference.training.data.csv_schema import DataError

    models = jobs.MODELS if args.model == "all" else (args.model,)
    if args.data is not None and len(models) > 1:
        print("--data is one model's CSV: name the model, not 'all'", file=sys.stderr)
        return 2
    kwargs = dict(data=args.data, fmt=args.format, interval_ms=args.interval_ms, seed=args.seed,
                  size="quick" if args.quick else "full", force=args.force, checkpoint_dir=args.checkpoints)
    try:
        if len(models) > 1 and args.workers > 1:
            results, held = jobs.run_all(models, args.out, workers=args.workers, **kwargs)
        else:
            results, held = [], {}
            for m in models:
                try:
                    results.append(jobs.run(m, args.out, **kwargs))
                except GateError as e:
                    held[jobs.NAMES[m]] = str(e)
    except DataError as e:
        print(f"refusing to train: {e}", file=sys.stderr)
        return 2
    print("\n" + "\n\n".join(r["report"] for r in results))
    for model, why in held.items():
        print(f"gate: {why}", file=sys.stderr)
    if args.report:
        from dwcp_inference.training import report

        print(f"report: {report.write(results, held, args.report)}")
    if held:
        print(f"not published (missed targets or lost to a baseline): {sorted(held)}", file=sys.stderr)
        return 3
    return 0


def _soak(args: argparse.Namespace) -> int:
    from dwcp_inference.soak import main as soak

    return soak(args)


def _import(args: argparse.Namespace) -> int:
    from dwcp_inference.export.importer import main as run_import

    return run_import(args)


def _fuzz(args: argparse.Namespace) -> int:
    from dwcp_inference.fuzz import main as fuzz

    return fuzz(args)


def _tune(args: argparse.Namespace) -> int:
    from dwcp_inference.training import jobs, tune

    size = "quick" if args.quick else "full"
    result = tune.tune(args.model, trials=args.trials, storage=args.storage, study=args.study, data=args.data,
                       fmt=args.format, interval_ms=args.interval_ms, seed=args.seed, size=size)
    if args.publish:
        jobs.run(args.model, args.publish, data=args.data, fmt=args.format, interval_ms=args.interval_ms,
                 seed=args.seed, size=size, params=result["best_params"])
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dwcp_inference.evaluate import main as evaluate

    return evaluate(args)


def _verify(args: argparse.Namespace) -> int:
    from dwcp_inference.services.repository import Repository
    from dwcp_inference.services.settings import Settings

    repo = Repository(Settings(repository=args.repository).resolved_repository())
    repo.load_all()
    listing = {m: sorted(v) for m, v in repo.loaded().items()}
    print(json.dumps({"loaded": listing, "refused": [r.__dict__ for r in repo.refused]}, indent=1))
    return 1 if repo.refused else 0


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"{args.target} {args.service or '(server)'}: {e.code().name}: {e.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    print(f"{args.target} {args.service or '(server)'}: {status}")
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
