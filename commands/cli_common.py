"""What the subcommands share: model names and their aliases, the client side of TLS, configuration errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from dwcp_inference import MODEL_KINDS

# The short names `train` and friends always took; every command accepts both.
ALIASES = {"bandwidth": "bandwidth_predictor", "compression": "compression_selector",
           "reliability": "reliability_detector", "consensus": "consensus_latency"}
SHORT = {full: short for short, full in ALIASES.items()}
MODEL_HELP = ", ".join(f"{full} ({short})" for short, full in ALIASES.items())


class ConfigError(Exception):
    """A setting is wrong: the message names it and says what is wrong; the CLI prints it and exits 2."""


def model_name(value: str) -> str:
    """argparse type: a model's full name, from its full or short name."""
    if value in MODEL_KINDS:
        return value
    if value in ALIASES:
        return ALIASES[value]
    raise argparse.ArgumentTypeError(f"unknown model {value!r}: expected one of {MODEL_HELP}")


def short_model_name(value: str) -> str:
    """argparse type for the commands whose jobs are keyed by the short name (train, tune, evaluate, import)."""
    return SHORT[model_name(value)]


def add_tls_flags(parser: argparse.ArgumentParser) -> None:
    env = "DWCP_INFERENCE_CLIENT_"
    group = parser.add_argument_group("TLS (any of these turns TLS on; plaintext without them)")
    group.add_argument("--ca", type=Path, default=os.environ.get(env + "CA"), metavar="FILE",
                       help=f"PEM CA that signed the server's certificate (default: ${env}CA, else the "
                            "system's roots)")
    group.add_argument("--cert", type=Path, default=os.environ.get(env + "CERT"), metavar="FILE",
                       help=f"PEM client certificate chain, for mutual TLS (default: ${env}CERT)")
    group.add_argument("--key", type=Path, default=os.environ.get(env + "KEY"), metavar="FILE",
                       help=f"PEM private key of --cert (default: ${env}KEY)")
    group.add_argument("--server-name", metavar="NAME",
                       help="the name to check in the server's certificate (default: the target's host)")


def _read(flag: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot read it: {e.strerror or e}") from e


def open_channel(target: str, args: argparse.Namespace) -> Any:
    """A channel to `target`: plaintext, TLS or mutual TLS after the flags of add_tls_flags."""
    import grpc

    if bool(args.cert) != bool(args.key):
        raise ConfigError("--cert and --key: a client certificate needs both (or DWCP_INFERENCE_CLIENT_CERT "
                          "and DWCP_INFERENCE_CLIENT_KEY)")
    if not (args.ca or args.cert or args.server_name):
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(root_certificates=_read("--ca", args.ca),
                                               private_key=_read("--key", args.key),
                                               certificate_chain=_read("--cert", args.cert))
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def explain(error: Any, args: argparse.Namespace) -> str:
    """A failed call's status and message, with a hint where gRPC's own says little."""
    import grpc

    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        if not (args.ca or args.cert or args.server_name):
            details += " (no server there, or it speaks TLS: pass --ca)"
        elif not args.cert:
            details += (" (the server may require a client certificate, mutual TLS: pass --cert and --key, or "
                        "set DWCP_INFERENCE_CLIENT_CERT and DWCP_INFERENCE_CLIENT_KEY)")
    return f"{code.name}: {details}"
