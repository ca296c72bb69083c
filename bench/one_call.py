"""One call's CPU as the server spends it, in-process: request bytes through the chosen decoder's deserializer, the
servicer, the response serializer (bytes to bytes: the native path when the extension is installed), per case.
With `--against DIR` (another checkout) the two trees alternate, each in its own process, round by round; the best
round of each is shown with the ratio. For changes too small for `bench.ab`'s ghz runs on a shared machine.

    python -m dwcp_inference.bench.one_call [--rpcs all] [--calls 2000] [--rounds 3] [--against DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from dwcp_inference.api import inference_pb2 as pb

from .floor_python import _Context, _our_answers
from .requests import CASES, cases, method, request

RESPONSES = {"PredictBandwidth": pb.PredictBandwidthResponse, "SelectCompression": pb.SelectCompressionResponse,
             "DetectAnomaly": pb.DetectAnomalyResponse, "DetectHighLatency": pb.DetectHighLatencyResponse}


def call(servicer: Any, decoder: Any, case: str) -> Callable[[], bytes]:
    rpc, req = method(case), request(case)
    data = req.SerializeToString()
    parse, serialize = decoder.deserializer(type(req)), decoder.serializer(RESPONSES[rpc])
    handler, context = getattr(servicer, rpc), _Context()
    return lambda: serialize(handler(parse(data), context))


def per_call_us(names: list[str], calls: int) -> dict[str, float]:
    from dwcp_inference.services import decode

    servicer, decoder = _our_answers(), decode.choose("auto")
    out = {}
    for case in names:
        fn = call(servicer, decoder, case)
        for _ in range(max(calls // 10, 20)):
            fn()
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        out[case] = (time.perf_counter() - started) / calls * 1e6
    return out


def _in(tree: Path | None, names: list[str], calls: int) -> dict[str, float]:
    """per_call_us in a fresh process, on `tree`'s package (None: this one)."""
    env, cwd = dict(os.environ), None
    if tree is not None:
        from .ab import _package_from
        cwd = env["PYTHONPATH"] = _package_from(tree.resolve())
    code = (f"import json; from dwcp_inference.bench.one_call import per_call_us; "
            f"print(json.dumps(per_call_us({names!r}, {calls})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpcs", default="all", help=f"comma-separated cases or RPCs, or all: {', '.join(CASES)}")
    parser.add_argument("--calls", type=int, default=2000, help="calls timed per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout to alternate with (its figures first)")
    args = parser.parse_args(argv)
    names = cases(args.rpcs)
    trees = ([args.against] if args.against else []) + [None]
    runs: dict[Path | None, list[dict[str, float]]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for tree in trees:
            runs[tree].append(_in(tree, names, args.calls))
    best = {t: {c: min(r[c] for r in rs) for c in names} for t, rs in runs.items()}
    header = f"| case | {args.against} µs | this tree µs | ratio |" if args.against else "| case | µs per call |"
    print(f"best of {args.rounds} rounds, {args.calls} calls each\n{header}\n" + "|---" * header.count("|", 1) + "|")
    for c in names:
        if args.against:
            print(f"| {c} | {best[args.against][c]:,.0f} | {best[None][c]:,.0f} | {best[None][c] / best[args.against][c]:.2f}x |")
        else:
            print(f"| {c} | {best[None][c]:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
