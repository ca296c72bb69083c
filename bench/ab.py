"""Our server in several variants (another source tree, other `serve` flags, another environment), measured in one
sitting, alternating rounds, the median of the rounds: what a change to the transport costs or wins.

    python -m dwcp_inference.bench.ab before:tree=/tmp/base now "t4:args=--threads 4" [--rounds 5] [--seconds 3]

A variant is `NAME[:key=value;...]` with keys `tree` (a checkout of this repository: its packages, laid out as its
pyproject.toml's package-dir maps them, are served instead of the installed ones), `args` (added to `serve`'s
flags) and `env` (`K=V,K=V`, added to the server's environment). Measured per variant: PredictBandwidth p50
sequential and QPS at 16 and 64 in flight, DetectAnomaly QPS at 64 in flight (a call where the transport is most of
the cost), and PredictBandwidth's batch of 64 (decisions/s, 16 in flight); with --all-rpcs also SelectCompression
(a 4 KiB sample) and DetectHighLatency QPS at 64 in flight; the server pinned to core 0, ghz to core 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from .suite import runner, serving

FIELDS = ("bw_p50_us", "bw_qps_c16", "bw_qps_c64", "anomaly_qps_c64", "bw_batch64_dps")
MORE_RPCS = {"compression_qps_c64": "SelectCompression/sample", "latency_qps_c64": "DetectHighLatency"}  # --all-rpcs
HEADERS = {"bw_p50_us": "PredictBandwidth p50 µs", "bw_qps_c16": "QPS@16", "bw_qps_c64": "QPS@64",
           "anomaly_qps_c64": "DetectAnomaly QPS@64", "bw_batch64_dps": "batch 64 decisions/s",
           "compression_qps_c64": "SelectCompression/sample QPS@64", "latency_qps_c64": "DetectHighLatency QPS@64"}
ROOT_PACKAGE = "dwcp_inference"


def package_dirs(tree: Path) -> dict[str, str]:
    """The tree's pyproject.toml `[tool.setuptools] package-dir`: each package's directory in the tree."""
    with open(tree / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def _package_from(tree: Path) -> str:
    """A directory whose `dwcp_inference` package is the tree's, laid out as its pyproject.toml maps it (each
    subpackage kept in a directory of its own, e.g. `services/`, linked in), for PYTHONPATH."""
    root = Path(tempfile.mkdtemp(prefix="ab-tree-"))
    dirs = package_dirs(tree)
    pkg = root / ROOT_PACKAGE
    pkg.mkdir()
    for entry in (tree / dirs.get(ROOT_PACKAGE, ROOT_PACKAGE)).iterdir():
        (pkg / entry.name).symlink_to(entry)
    for name, directory in dirs.items():
        if name.count(".") == 1 and name.startswith(ROOT_PACKAGE + "."):  # deeper ones live in their parent's
            link = root.joinpath(*name.split("."))
            link.unlink(missing_ok=True)  # a subpackage the root directory also holds: the mapped one
            link.symlink_to(tree / directory)
    return str(root)


def parse(spec: str) -> dict[str, Any]:
    name, _, rest = spec.partition(":")
    v: dict[str, Any] = {"name": name, "args": (), "env": {}, "cwd": None}
    for part in filter(None, rest.split(";")):
        key, _, value = part.partition("=")
        if key == "tree":
            # The server starts in that directory: `python -m` puts its directory first on sys.path (a checkout's
            # own dwcp_inference/ in the directory it starts from would win over PYTHONPATH).
            v["cwd"] = v["env"]["PYTHONPATH"] = _package_from(Path(value).resolve())
        elif key == "args":
            v["args"] = tuple(shlex.split(value))
        elif key == "env":
            v["env"].update(dict(kv.split("=", 1) for kv in value.split(",")))
        else:
            raise ValueError(f"{spec}: unknown key {key!r} (tree, args, env)")
    return v


def measure(variant: dict[str, Any], seconds: float, all_rpcs: bool = False) -> dict[str, float]:
    with serving("dwcp", serve_args=variant["args"], env_extra=variant["env"], cwd=variant["cwd"]) as target:
        bw, anomaly = runner(target, "PredictBandwidth"), runner(target, "DetectAnomaly")
        bw(1, 4, 1.0)
        anomaly(1, 4, 0.5)
        seq, c16, c64 = bw(1, 1, seconds), bw(1, 16, seconds), bw(1, 64, seconds)
        a64, b64 = anomaly(1, 64, seconds), bw(64, 16, seconds)
        more = {}
        for field, case in (MORE_RPCS.items() if all_rpcs else ()):
            runner(target, case)(1, 4, 0.5)
            more[field] = runner(target, case)(1, 64, seconds)["ok_qps"]
    return {"bw_p50_us": seq["p50_us"], "bw_qps_c16": c16["ok_qps"], "bw_qps_c64": c64["ok_qps"],
            "anomaly_qps_c64": a64["ok_qps"], "bw_batch64_dps": b64["ok_qps"] * 64, **more}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="NAME[:tree=DIR;args=FLAGS;env=K=V,...]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--all-rpcs", action="store_true",
                        help="also SelectCompression (4 KiB sample) and DetectHighLatency QPS at 64 in flight")
    args = parser.parse_args(argv)
    fields = FIELDS + (tuple(MORE_RPCS) if args.all_rpcs else ())
    variants = [parse(s) for s in args.variants]
    samples: dict[str, list[dict[str, float]]] = {v["name"]: [] for v in variants}
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:  # alternating, and each order as often
            samples[v["name"]].append(measure(v, args.seconds, args.all_rpcs))
            print(f"[ab] round {r + 1}/{args.rounds} {v['name']}: {samples[v['name']][-1]}", file=sys.stderr,
                  flush=True)
    first = variants[0]["name"]
    med = {n: {f: statistics.median(s[f] for s in runs) for f in fields} for n, runs in samples.items()}
    print(f"{os.cpu_count()} cores, median of {args.rounds} alternating rounds, {args.seconds:g} s per run; "
          f"ratios to {first}")
    print("| variant | " + " | ".join(HEADERS[f] for f in fields) + " |")
    print("|---" * (len(fields) + 1) + "|")
    for n, m in med.items():
        cells = [f"{m[f]:,.0f} ({m[f] / med[first][f]:.2f}x)" for f in fields]
        print(f"| {n} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"cores": os.cpu_count(), "rounds": args.rounds, "seconds": args.seconds,
                                         "variants": variants, "samples": samples, "median": med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
