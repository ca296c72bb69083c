"""Where our servicer's time goes, in-process (no RPC, a hot loop): per case, the whole servicer call, the part in
validation, features and the model (`ModelRuntime.compute`), and the model alone (its onnxruntime session; with
its features when the version holds them in its graph).
`dwcp-inference bench --stages` runs it in the same run as the table and stores it in the JSON.

    python -m dwcp_inference.bench.stages [--rpcs all] [--batch 1,64] [--calls 3000]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from .floor_python import MODELS, _Context, _our_answers, model_input
from .requests import BATCH_FORMS, CASES, cases, method, request

PARTS = ("servicer", "validation, features, model", "model")


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    for _ in range(max(calls // 10, 10)):
        fn()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def stages(case: str, batch: int, calls: int, servicer: Any = None) -> dict[str, float]:
    servicer = servicer or _our_answers()
    rpc = method(case)
    rt = servicer.repo.get(MODELS[rpc])
    req, call = request(case, batch), getattr(servicer, rpc if batch == 1 else BATCH_FORMS[rpc])
    seen: dict[str, Any] = {}
    infer = rt.compute

    def infer_seen(columns: Any) -> Any:
        seen["columns"] = columns
        return infer(columns)

    batcher, rt.batcher = rt.batcher, None  # one call, unbatched, to keep what the servicer hands the model
    rt.compute = infer_seen
    try:
        call(req, _Context())
    finally:
        del rt.compute  # the class's method again
        rt.batcher = batcher
    session, names, feed = model_input(servicer, case, batch)
    calls = max(calls // batch, 20)
    return {"servicer": per_call_us(lambda: call(req, _Context()), calls),
            "validation, features, model": per_call_us(lambda: infer(seen["columns"]), calls),
            "model": per_call_us(lambda: session.run(names, feed), calls)}


def measure(names: list[str], batches: tuple[int, ...] = (1, 64), calls: int = 3000) -> list[dict[str, Any]]:
    """Rows {case, batch, servicer_us, features_us (validation, features, model), model_us}."""
    servicer = _our_answers()
    out = []
    for case in names:
        for b in batches:
            s = stages(case, b, calls, servicer)
            out.append({"case": case, "batch": b, "servicer_us": s["servicer"],
                        "features_us": s["validation, features, model"], "model_us": s["model"]})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | batch | servicer µs | of which validation, features, model | of which model |", "|---" * 5 + "|"]
    lines += [f"| {r['case']} | {r['batch']} | {r['servicer_us']:,.0f} | {r['features_us']:,.0f} | "
              f"{r['model_us']:,.0f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpcs", default="all", help=f"comma-separated cases or RPCs, or all: {', '.join(CASES)}")
    parser.add_argument("--batch", default="1,64", help="comma-separated batch sizes (default %(default)s)")
    parser.add_argument("--calls", type=int, default=3000, help="items timed per row (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        names = cases(args.rpcs)
    except ValueError as e:
        parser.error(f"--rpcs: {e}")
    print(table(measure(names, tuple(int(b) for b in args.batch.split(",")), args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
