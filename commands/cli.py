"""The dwcp-inference command line: serve a model repository, train, evaluate, tune and import models, and check
or operate a running server.

Training imports are deferred, so the server's lean install needs none of the train extra."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from dwcp_inference.commands.cli_common import (MODEL_HELP, ConfigError, add_tls_flags, explain, model_name,
                                                open_channel, short_model_name)

FORMATS = ["csv", "mahimahi", "payloads", "nab", "labelled"]
EXTRAS = {  # command: (extra, modules it needs); checked before any work starts
    "train": ("train", ("torch", "sklearn", "skl2onnx", "onnx")),
    "tune": ("train", ("torch", "sklearn", "optuna")),
    "evaluate": ("train", ("torch", "sklearn")),
    "continuous": ("train", ("torch", "sklearn", "mlflow", "sqlalchemy", "scipy")),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own flags: dwcp-inference bench --help
        from dwcp_inference.bench.suite import main as bench

        return bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command != "serve":  # serve sets logging up from its settings
            _logging_from_env()
        _check_extra(args.command)
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"dwcp-inference {args.command}: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dwcp-inference", description=__doc__.split("\n\n")[0],
                                     epilog="Logging: DWCP_INFERENCE_LOG_LEVEL (default INFO) and "
                                            "DWCP_INFERENCE_LOG_FORMAT (text or json) apply to every command. "
                                            f"MODEL is one of {MODEL_HELP}.")
    parser.add_argument("--version", action=_Version, help="print the package and API versions and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    _train_parser(sub)
    _evaluate_parser(sub)
    _tune_parser(sub)
    _fuzz_parser(sub)
    _soak_parser(sub)
    from dwcp_inference.commands import admin_cli

    admin_cli.add_parser(sub)
    from dwcp_inference.commands import continuous

    continuous.add_parser(sub)
    v = sub.add_parser("verify", help="load and verify every version of a repository, as the server would",
                       description="Load and verify every version of a repository (sha256, test vectors) as the "
                                   "server would, and print what loads and what is refused. Exit 1 if any "
                                   "version is refused.")
    v.add_argument("--repository", type=Path, metavar="DIR", help="model repository (default: the bundled models)")
    _import_parser(sub)
    sub.add_parser("bench", help="our server beside the Python and Go floors and the model in-process (ghz; "
                                 "dwcp-inference bench --help)", add_help=False)
    h = sub.add_parser("health", help="ask a server's grpc.health.v1 service; exit 1 unless SERVING",
                       description="Ask a server's grpc.health.v1 service whether it (or one model) is serving. "
                                   "Exit 0 when SERVING, 1 otherwise. Speaks TLS and mutual TLS with the flags "
                                   "below.")
    h.add_argument("--target", default="127.0.0.1:50051", metavar="HOST:PORT", help="default %(default)s")
    h.add_argument("--service", default="", metavar="MODEL",
                   help="a model (full or short name), or empty for the whole server (default: empty)")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds (default %(default)s)")
    add_tls_flags(h)
    return parser


class _Version(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kw: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        import dwcp_inference
        from dwcp_inference.api import inference_pb2

        print(f"dwcp-inference {dwcp_inference.__version__} (API {inference_pb2.DESCRIPTOR.package})")
        parser.exit()


def _logging_from_env() -> None:
    from dwcp_inference.services import logs

    values = {}
    for name, default, check in (("LOG_LEVEL", "INFO", logs.check_level), ("LOG_FORMAT", "text", logs.check_format)):
        raw = os.environ.get(f"DWCP_INFERENCE_{name}", default)
        try:
            values[name] = check(raw)
        except ValueError as e:
            raise ConfigError(f"DWCP_INFERENCE_{name}: {e}") from None
    logs.setup(values["LOG_LEVEL"], values["LOG_FORMAT"])


def _check_extra(command: str) -> None:
    extra, modules = EXTRAS.get(command, ("", ()))
    missing = [m for m in modules if not _importable(m)]
    if missing:
        raise ConfigError(f"{command} needs the {extra} extra: pip install 'dwcp-inference[{extra}]' "
                          f"(missing: {', '.join(missing)})")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module blocked with sys.modules[name] = None
        return False


# --- serve: every Settings field is a flag and a DWCP_INFERENCE_* variable --------------------------------------

def _kind(f: Any, default: Any) -> Any:
    if "Path" in str(f.type):
        return Path
    return {bool: _boolean, int: int, float: float}.get(type(default), str)


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


CHOICES = {"log_level": ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], "log_format": ["text", "json"],  # logs.py
           "decoder": ["auto", "native", "python"],  # services/decode.py
           "front": ["auto", "native", "grpcio"]}  # services/front.py
SECRETS = {"admin_token"}  # never printed, not even in --help


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    from dwcp_inference.services.settings import Settings

    p = sub.add_parser("serve", help="serve a model repository over gRPC",
                       description="Serve a model repository over gRPC. Every flag also reads an environment "
                                   "variable, DWCP_INFERENCE_<FLAG> (e.g. DWCP_INFERENCE_PORT); a flag wins over "
                                   "its variable. The defaults shown include what the environment sets now.")
    defaults = Settings()
    for f in fields(Settings):
        env, default = Settings.env_name(f.name), getattr(defaults, f.name)
        shown = {"repository": "the bundled models"}.get(f.name, "none" if default is None else default)
        if f.name in SECRETS:
            shown = "set by " + env if os.environ.get(env) else "none"
        elif env in os.environ:  # the environment's value is the default now (parsed only when serve runs)
            shown = f"{os.environ[env]!r} from {env}"
        # Defaults are applied in _settings, so a bad variable breaks serve (with its name), not every command.
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_kind(f, default), default=None,
                       choices=CHOICES.get(f.name), metavar=None if f.name in CHOICES else f.name.upper(),
                       help=f"env {env} (default: {shown})")


def _settings(args: argparse.Namespace) -> Any:
    """Settings from the flags, then the environment, then the defaults; ConfigError names a bad value."""
    from dwcp_inference.services.settings import Settings

    defaults, values = Settings(), {}
    for f in fields(Settings):
        env, value = Settings.env_name(f.name), getattr(args, f.name)
        if value is None and os.environ.get(env, "") != "":
            try:
                value = _kind(f, getattr(defaults, f.name))(os.environ[env])
            except ValueError:
                kind = _kind(f, getattr(defaults, f.name))
                raise ConfigError(f"{env}={os.environ[env]!r}: expected {_KIND_NAMES.get(kind, kind.__name__)}") \
                    from None
            if f.name == "log_level":
                value = value.upper()
            if f.name in CHOICES and value not in CHOICES[f.name]:
                raise ConfigError(f"{env}={os.environ[env]!r}: expected one of {', '.join(CHOICES[f.name])}")
        values[f.name] = getattr(defaults, f.name) if value is None else value
    settings = Settings(**values)
    _check_settings(settings)
    return settings


_KIND_NAMES = {int: "an integer", float: "a number", _boolean: "true or false"}


def _check_settings(s: Any) -> None:
    for problem in s.out_of_range():  # NaN, infinity, negative counts: refused, never taken silently
        raise ConfigError(problem)
    repository = s.resolved_repository()
    if not repository.is_dir():
        raise ConfigError(f"--repository (DWCP_INFERENCE_REPOSITORY) {repository}: "
                          + ("not a directory" if repository.exists() else "no such directory"))
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("--tls-cert and --tls-key (DWCP_INFERENCE_TLS_CERT/_KEY): TLS needs both")
    if s.tls_client_ca and not s.tls_cert:
        raise ConfigError("--tls-client-ca (DWCP_INFERENCE_TLS_CLIENT_CA): mutual TLS needs --tls-cert and "
                          "--tls-key too")
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(s, name)
        if path:
            try:
                Path(path).read_bytes()
            except OSError as e:
                raise ConfigError(f"--{name.replace('_', '-')} {path}: cannot read it: {e.strerror or e}") from None
    if s.workers > 1 and s.port == 0:
        raise ConfigError("--workers: every worker must listen on the same port: set --port, not 0")
    if s.decoder == "native":
        from dwcp_inference.services import decode

        try:
            decode.choose(s.decoder)
        except ValueError as e:
            raise ConfigError(f"{e} (DWCP_INFERENCE_DECODER)") from None
    if s.front == "native":
        from dwcp_inference.services import front

        try:
            front.choose(s.front)
        except ValueError as e:
            raise ConfigError(f"{e} (DWCP_INFERENCE_FRONT)") from None


def _serve(args: argparse.Namespace) -> int:
    from dwcp_inference.services import logs
    from dwcp_inference.services.policy import PolicyError
    from dwcp_inference.services.server import serve
    from dwcp_inference.services.workers import supervise

    settings = _settings(args)
    logs.setup(settings.log_level, settings.log_format)
    try:
        (supervise if settings.workers > 1 else serve)(settings)
    except PolicyError as e:
        raise ConfigError(str(e)) from None
    return 0


# --- training and evaluation ------------------------------------------------------------------------------------

def _model_or_all(value: str) -> str:
    return value if value == "all" else short_model_name(value)


def _data_flags(p: argparse.ArgumentParser, data_help: str, required: bool = False) -> None:
    p.add_argument("--data", type=Path, metavar="PATH", help=data_help, required=required)
    p.add_argument("--format", choices=FORMATS, default="csv",
                   help="format of --data: csv (docs/data.md), mahimahi traces (bandwidth), a payload corpus "
                        "directory (compression), NAB series with combined_windows.json or series labelled per row "
                        "(timestamp,value,is_anomaly; the detectors) (default %(default)s)")
    p.add_argument("--interval-ms", type=int, default=1000, metavar="MS",
                   help="mahimahi: throughput interval in milliseconds (default %(default)s)")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train models, export them to ONNX and publish them into a repository",
                       description="Train, export (ONNX + metadata.json, parity-checked) and publish one model "
                                   "or all four. Needs the train extra: pip install 'dwcp-inference[train]'.")
    p.add_argument("model", type=_model_or_all, metavar="MODEL", help=f"{MODEL_HELP}, or all")
    p.add_argument("--out", type=Path, required=True, metavar="REPO", help="model repository to publish into")
    _data_flags(p, "the model's data (docs/data.md) (default: generated data)")
    p.add_argument("--seed", type=int, default=0, help="random seed of data, splits and weights (default "
                                                       "%(default)s)")
    p.add_argument("--quick", action="store_true", help="small data and few epochs (tests, smoke runs)")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="write the report here: report.md, report.json and plots (default: none)")
    p.add_argument("--workers", type=int, default=2, help="models trained at once, each in its own process "
                                                          "(default %(default)s)")
    p.add_argument("--checkpoints", type=Path, metavar="DIR",
                   help="save the best weights of each neural model here as training goes (MODEL.pt) "
                        "(default: none)")
    p.add_argument("--force", action="store_true",
                   help="publish a model even when it misses its targets or loses to a baseline")


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="run a served model version on held-out data beside the baselines",
                       description="Evaluate a model version of a repository, through the server's runtime, on "
                                   "the held-out part of DATA (the split training used), beside the baselines. "
                                   "Needs the train extra.")
    e.add_argument("model", type=short_model_name, metavar="MODEL", help=MODEL_HELP)
    e.add_argument("--repository", type=Path, required=True, metavar="REPO",
                   help="model repository holding the version (required)")
    _data_flags(e, "the data the model was trained on; its held-out split is used (required)", required=True)
    e.add_argument("--version", default="", help="default: the version the server would serve")
    e.add_argument("--all", action="store_true",
                   help="hold out every trace, row or file of DATA (data the version never saw; refused if training "
                        "used part of it) instead of the split training used (default: that split)")
    e.add_argument("--json", action="store_true", help="print the figures as JSON")


def _tune_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tune", help="search hyperparameters with Optuna on validation data",
                       description="Search a model's hyperparameters with Optuna, judged on validation data. "
                                   "Several machines can share one study through --storage. Needs the train "
                                   "extra.")
    t.add_argument("model", type=short_model_name, metavar="MODEL", help=MODEL_HELP)
    t.add_argument("--trials", type=int, default=20, help="trials to run (default %(default)s)")
    t.add_argument("--storage", default="sqlite:///tune.db",
                   help="Optuna storage URL (default %(default)s; postgresql://... to share a study)")
    t.add_argument("--study", default="", help="study name (default dwcp-MODEL)")
    _data_flags(t, "the model's data (docs/data.md) (default: generated data)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    t.add_argument("--quick", action="store_true", help="small data and few epochs per trial")
    t.add_argument("--publish", type=Path, metavar="REPO",
                   help="retrain with the best parameters and publish into REPO (default: do not publish)")


def _fuzz_parser(sub: argparse._SubParsersAction) -> None:
    z = sub.add_parser("fuzz", help="send generated bad requests to a server and check every answer",
                       description="Send COUNT generated bad requests through a real channel; each answer must "
                                   "carry the right status and name the field. Exit 1 on any wrong answer.")
    z.add_argument("--target", default="127.0.0.1:50051", metavar="HOST:PORT",
                   help="the server's inference address (default %(default)s)")
    z.add_argument("--count", type=int, default=10000, help="requests to send (default %(default)s)")
    z.add_argument("--seed", type=int, default=0, help="random seed of the requests (default %(default)s)")
    z.add_argument("--pid", type=int, help="the server's process id, to follow its memory (default: not followed)")
    z.add_argument("--json", action="store_true", help="print the summary as JSON")


def _soak_parser(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("soak", help="mixed traffic and hot swaps against a server; memory, files, errors, latency",
                       description="Run a server (on a copy of the repository) under mixed traffic while new "
                                   "versions are published; print its memory, open files, errors and latency.")
    k.add_argument("--minutes", type=float, default=30, help="how long to run (default %(default)s)")
    k.add_argument("--interval", type=float, default=60, help="seconds between report lines (default %(default)s)")
    k.add_argument("--swaps", type=int, default=50, help="versions published during the run (default %(default)s)")
    k.add_argument("--clients", type=int, default=4, help="concurrent client threads (default %(default)s)")
    k.add_argument("--repository", type=Path, metavar="DIR", help="default: the bundled models")
    k.add_argument("--outcome-capacity", type=int, default=100_000,
                   help="the server's remembered predictions (default %(default)s)")
    k.add_argument("--json", action="store_true", help="print the figures as JSON")


def _importable_model(value: str) -> str:
    short = short_model_name(value)
    if short == "compression":
        raise argparse.ArgumentTypeError("compression_selector cannot be imported (its labels come from our "
                                         "codec oracle): expected bandwidth_predictor, reliability_detector or "
                                         "consensus_latency")
    return short


def _import_parser(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser(
        "import", help="import a Keras, scikit-learn, PyTorch or ONNX model as a new version",
        description="Convert a model trained elsewhere to ONNX, check it fits the model kind, compare it with its "
                    "framework on generated inputs, and publish it as a new version (docs/import.md). Needs the "
                    "extra of its framework: keras, sklearn or torch. Loading a pickle (scikit-learn's joblib or "
                    "pickle files, a pickled torch module) runs code from the file: it is refused unless you pass "
                    "--trust-pickle.")
    i.add_argument("model", type=_importable_model, metavar="MODEL",
                   help="bandwidth_predictor (bandwidth), reliability_detector (reliability) or consensus_latency "
                        "(consensus)")
    i.add_argument("--from", dest="source", required=True, choices=["keras", "sklearn", "torch", "onnx"],
                   help="the framework it was trained with (required)")
    i.add_argument("path", type=Path, help="the model: .keras/.h5 or SavedModel directory, joblib/pickle, "
                                            "TorchScript .pt, .onnx")
    i.add_argument("--repository", type=Path, required=True, metavar="REPO",
                   help="model repository to publish into (required)")
    i.add_argument("--features", type=Path, required=True, metavar="FILE",
                   help="input columns in order: a JSON list, {\"inputs\": [...], \"outputs\": [...]}, or one per "
                        "line (required)")
    i.add_argument("--scaler", type=Path, metavar="FILE",
                   help="the feature scaling it was trained with, as JSON (mean and scale, or min and max, per "
                        "feature) (default: none; then pass --no-scaler)")
    i.add_argument("--no-scaler", action="store_true", help="the model takes raw values")
    i.add_argument("--window", type=int, help="samples per window (bandwidth, consensus) (default: from the model)")
    i.add_argument("--threshold", type=float,
                   help="a detector's decision threshold on its score (default: none; detectors need one)")
    i.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a pickle, which runs code from the file: only for files you trust")
    i.add_argument("--imputation-from", type=Path, metavar="CSV",
                   help="the data it was trained on, in the training CSV schema (docs/data.md): each field's "
                        "median over its normal rows becomes the version's imputation section (default: none)")


def _train(args: argparse.Namespace) -> int:
    from dwcp_inference.training import jobs
    from dwcp_inference.training.common import GateError
    from dwcp_inference.training.data.csv_schema import DataError

    models = jobs.MODELS if args.model == "all" else (args.model,)
    if args.data is not None and len(models) > 1:
        raise ConfigError("--data is one model's data: name the model, not 'all'")
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
                    results += [e.result] if e.result else []  # its table and plot still go in the report
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
    from dwcp_inference.commands.soak import main as soak

    return soak(args)


def _import(args: argparse.Namespace) -> int:
    from dwcp_inference.export.importer import main as run_import
    from dwcp_inference.training.data.csv_schema import load_csv

    return run_import(args, load_csv=load_csv)


def _fuzz(args: argparse.Namespace) -> int:
    from dwcp_inference.commands.fuzz import main as fuzz

    return fuzz(args)


def _tune(args: argparse.Namespace) -> int:
    from dwcp_inference.training import jobs, tune
    from dwcp_inference.training.data.csv_schema import DataError

    size = "quick" if args.quick else "full"
    try:
        result = tune.tune(args.model, trials=args.trials, storage=args.storage, study=args.study, data=args.data,
                           fmt=args.format, interval_ms=args.interval_ms, seed=args.seed, size=size)
    except DataError as e:
        print(f"refusing to tune: {e}", file=sys.stderr)
        return 2
    if args.publish:
        jobs.run(args.model, args.publish, data=args.data, fmt=args.format, interval_ms=args.interval_ms,
                 seed=args.seed, size=size, params=result["best_params"])
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dwcp_inference.commands.evaluate import main as evaluate

    if not args.repository.is_dir():
        raise ConfigError(f"--repository {args.repository}: no such directory")
    return evaluate(args)


def _verify(args: argparse.Namespace) -> int:
    from dwcp_inference.services.policy import PolicyError
    from dwcp_inference.services.repository import Repository
    from dwcp_inference.services.settings import Settings

    root = Settings(repository=args.repository).resolved_repository()
    if not root.is_dir():
        raise ConfigError(f"--repository {root}: no such directory")
    repo = Repository(root)
    try:
        repo.load_all()
    except PolicyError as e:
        raise ConfigError(str(e)) from None
    listing = {m: sorted(v) for m, v in repo.loaded().items()}
    print(json.dumps({"loaded": listing, "refused": [r.__dict__ for r in repo.refused]}, indent=1))
    return 1 if repo.refused else 0


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    service = _health_service(args.service)
    name = service or "(server)"
    with open_channel(args.target, args) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=args.timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                print(f"{args.target} {name}: NOT_FOUND: the server has no health status for {service!r}; "
                      f"expected a model, {MODEL_HELP}, or empty for the whole server")
            else:
                print(f"{args.target} {name}: {explain(e, args)}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    print(f"{args.target} {name}: {status}")
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1


def _continuous(args: argparse.Namespace) -> int:
    from dwcp_inference.commands import continuous

    return continuous.run(args)


def _models(args: argparse.Namespace) -> int:
    from dwcp_inference.commands import admin_cli

    return admin_cli.run(args)


def _health_service(value: str) -> str:
    """A model's short name is mapped to the full one; other names (the whole service's) go as they are."""
    try:
        return model_name(value) if value else ""
    except argparse.ArgumentTypeError:
        return value


COMMANDS = {"serve": _serve, "train": _train, "evaluate": _evaluate, "verify": _verify, "health": _health,
            "tune": _tune, "fuzz": _fuzz, "soak": _soak, "import": _import,
            "models": _models, "continuous": _continuous}


if __name__ == "__main__":
    sys.exit(main())
