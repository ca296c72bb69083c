"""Where our servicer's time goes, in-process (no RPC, a hot loop): per RPC, the whole servicer call, the part in
validation, features and the model (`ModelRuntime._infer`), and the model alone (`ModelRuntime.run`).

    python -m dwcp_inference.bench.stages [--rpcs all] [--batch 1] [--calls 3000]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from .floor_python import MODELS, _Context, _our_answers
from .requests import BATCH_FORMS, RPCS, request


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    for _ in range(max(calls // 10, 10)):
        fn()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def stages(rpc: str, batch: int, calls: int) -> dict[str, float]:
    servicer = _our_answers()
    rt = servicer.repo.get(MODELS[rpc])
    req, method = request(rpc, batch), getattr(servicer, rpc if batch == 1 else BATCH_FORMS[rpc])
    seen: dict[str, Any] = {}
    infer, run = rt._infer, rt.run

    def infer_seen(columns: Any) -> Any:
        seen["columns"] = columns
        return infer(columns)

    def run_seen(x: Any) -> Any:
        seen["x"] = x
        return run(x)

    rt._infer, rt.run = infer_seen, run_seen  # one call, to keep what the servicer hands each stage
    method(req, _Context())
    del rt._infer, rt.run  # the class's methods again
    return {"servicer": per_call_us(lambda: method(req, _Context()), calls),
            "validation, features, model": per_call_us(lambda: infer(seen["columns"]), calls),
            "model": per_call_us(lambda: run(seen["x"]), calls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpcs", default="all", help=f"comma-separated, or all: {', '.join(RPCS)}")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    rpcs = list(RPCS) if args.rpcs == "all" else args.rpcs.split(",")
    print(f"| rpc (batch {args.batch}) | servicer µs | validation, features, model µs | model µs |")
    print("|---|---|---|---|")
    for rpc in rpcs:
        s = stages(rpc, args.batch, args.calls)
        print(f"| {rpc} | {s['servicer']:.0f} | {s['validation, features, model']:.0f} | {s['model']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
