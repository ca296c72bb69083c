"""Running ghz (the gRPC load generator, a Go binary: the load is not a Python loop measuring itself) against a
server, and reading its JSON report."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict

ROOT = Path(__file__).resolve().parents[1]
GHZ_VERSION = "v0.93.0"  # what the Go module proxy serves as latest
# ghz ends each timed run by cancelling the calls in flight and closing its connections: those calls come back
# Canceled or Unavailable ("transport is closing"); they are counted apart, under this name.
CLOSING = "Unavailable (in flight when ghz stopped)"


def ghz_binary() -> str:
    """ghz from PATH or GOPATH/bin, installed from the Go module proxy when missing."""
    found = shutil.which("ghz")
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True).stdout.strip()
    candidate = Path(gopath) / "bin" / "ghz"
    if found:
        return found
    if not candidate.exists():
        subprocess.run(["go", "install", f"github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}"], check=True)
    return str(candidate)


@functools.cache
def protoset() -> Path:
    """The API as a descriptor set (ghz's own .proto parser predates proto3 optional fields)."""
    from grpc_tools import protoc  # dev extra

    out = Path(tempfile.gettempdir()) / "dwcp-inference.protoset"
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"-I{include}", "--include_imports",
                        f"--descriptor_set_out={out}", str(ROOT / "protos/dwcp/inference/v1/inference.proto")])
    if code:
        sys.exit("protoc failed")
    return out


def run(target: str, method: str, request: Any, *, concurrency: int, seconds: float, rps: int = 0,
        extra: tuple[str, ...] = (), prefix: tuple[str, ...] = (), call: str = "",
        protoset_path: Path | None = None) -> dict[str, Any]:
    """One ghz run of our `method` (or any `call` of `protoset_path`); `request` is a message or its JSON form.
    Returns counts by status, QPS of OK answers, and latency percentiles of OK answers (µs)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(request if isinstance(request, dict) else MessageToDict(request), f)
    cmd = [ghz_binary(), "--insecure", "--protoset", str(protoset_path or protoset()), "--call",
           call or f"dwcp.inference.v1.InferenceService/{method}", "-D", f.name, "-c", str(concurrency), "-z", f"{seconds}s",
           "-O", "json", "--connections", str(min(concurrency, 8)), *extra]
    if rps:
        cmd += ["--rps", str(rps)]
    try:
        proc = subprocess.run([*prefix, *cmd, target], capture_output=True, text=True)
    finally:
        Path(f.name).unlink()
    if not proc.stdout.strip():
        raise RuntimeError(f"ghz failed: {proc.stderr.strip()[-1000:]}")
    report = json.loads(proc.stdout)
    ok = np.array([d["latency"] for d in report.get("details") or [] if d["status"] == "OK"]) / 1000.0
    statuses: dict[str, int] = {}
    for d in report.get("details") or []:
        error = d.get("error", "")
        key = CLOSING if "transport is closing" in error or d["status"] == "Canceled" else d["status"]
        statuses[key] = statuses.get(key, 0) + 1
    duration = report["total"] / 1e9
    return {"statuses": statuses, "ok_qps": len(ok) / duration if duration else 0.0,
            "p50_us": float(np.percentile(ok, 50)) if ok.size else None,
            "p99_us": float(np.percentile(ok, 99)) if ok.size else None, "offered_rps": rps or None}
