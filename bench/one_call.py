"""One call's CPU as the server spends it, in-process: request bytes through the chosen decoder's deserializer, the
servicer, the response serializer (bytes to bytes: the native path when the extension is installed), per case.
With `--against DIR` (another checkout) the two trees alternate, each in its own process, round by round; the best
round of each is shown with the ratio. For changes too small for `bench.ab`'s ghz runs on a shared machine.
With `--profile`, py-spy samples each case's call in a hot loop instead, and the call's µs are split by the part
of the request path the sample was in (the innermost frame that names one, `PARTS`); with `--against` too, that
tree's table first. With `--together N`, each case's call also made N at a time, as the transport's coalescer
computes calls that arrive together (`InferenceServicer.many`), beside the call alone: µs per call.

    python -m dwcp_inference.bench.one_call [--rpcs all] [--calls 2000] [--rounds 3] [--against DIR]
    python -m dwcp_inference.bench.one_call --together 32 [--rpcs all]
    python -m dwcp_inference.bench.one_call --profile [--rpcs all] [--seconds 8] [--against DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from dwcp_inference.api import inference_pb2 as pb

from .floor_python import _Context, _our_answers
from .profile import stage_of
from .requests import CASES, cases, method, request

RESPONSES = {"PredictBandwidth": pb.PredictBandwidthResponse, "SelectCompression": pb.SelectCompressionResponse,
             "DetectAnomaly": pb.DetectAnomalyResponse, "DetectHighLatency": pb.DetectHighLatencyResponse}


def call(servicer: Any, decoder: Any, case: str, together: int = 1) -> Callable[[], Any]:
    """One call, bytes to bytes; with `together` > 1, that many calls arriving together (`servicer.many`, as the
    transport's coalescer computes them)."""
    rpc, req = method(case), request(case)
    data = req.SerializeToString()
    parse, serialize = decoder.deserializer(type(req)), decoder.serializer(RESPONSES[rpc])
    handler, context = getattr(servicer, rpc), _Context()
    if together > 1:
        return lambda: [serialize(r) for r in servicer.many(rpc, [parse(data) for _ in range(together)],
                                                            [context] * together)]
    return lambda: serialize(handler(parse(data), context))


def per_call_us(names: list[str], calls: int, together: int = 1) -> dict[str, float]:
    from dwcp_inference.services import decode

    servicer, decoder = _our_answers(), decode.choose("auto")
    out = {}
    for case in names:
        fn, repeats = call(servicer, decoder, case, together), max(calls // together, 1)
        for _ in range(max(repeats // 10, 20)):
            fn()
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[case] = (time.perf_counter() - started) / (repeats * together) * 1e6
    return out


# A part of one call's path, by the innermost frame (`function (file:line)`) that matches, searched leaf outwards.
PARTS = [
    ("model (onnxruntime session)", r"\(onnxruntime/capi/"),
    ("validation (features.Pipeline)", r"^Pipeline\."),
    ("the graph's feed", r"run_raw\.<locals>|^_indices|\(dwcp_inference/raw_inputs\.py"),
    ("drift meter", r"^DriftMeter\."),
    ("prediction ids", r"\(services/(prediction_ids|outcomes)\.py"),
    ("response bytes", r"\(services/encode\.py|^Samples\.last_times|^(timestamp|seconds_nanos|"
                       r"\w+_(predictions|decisions|verdicts)) \(services/convert\.py"),
    ("decision rule", r"\(services/decisions\.py"),
    ("bytes to columns (decode)", r"^(?!Samples\.)\S+ \(services/decode\.py"),  # Samples' methods: their caller's
    ("columns checked, payload traits (convert)", r"\(services/convert\.py"),
    ("deadline", r"\(services/deadline\.py"),
    ("version lookup", r"\(services/(repository|policy)\.py"),
    ("metrics", r"\(prometheus_client/|\(services/metrics\.py"),
    ("runtime (ModelRuntime)", r"^ModelRuntime\."),
    ("rpc wrapper and servicer", r"\(services/servicers\.py"),
]
LOOP_MARK = "_timed_calls"  # HOT_LOOP's timed loop: samples outside it (start-up, imports) are left out


def _relative(frame: str) -> str:
    """A frame's file as this checkout names it (services/decode.py), also when it ran from another tree's
    package (dwcp_inference/services/decode.py, or an absolute path)."""
    frame = re.sub(r"\(/.*?(site-packages/|python3\.\d+/|main/)", "(", frame)
    return re.sub(r"\((?:/\S*/)?dwcp_inference/(?=(services|bench|training|export|commands)/)", "(", frame)


def split(raw: str) -> tuple[collections.Counter, int]:
    """(samples per part, all samples) of py-spy's raw output, counting only samples inside the hot loop."""
    parts: collections.Counter = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if LOOP_MARK not in stack or not count.isdigit():
            continue  # start-up, imports
        frames = [_relative(f) for f in stack.split(";")]
        parts[stage_of(frames, PARTS)] += int(count)
        total += int(count)
    return parts, total


# One case's call in a hot loop, run under py-spy: only the package's `call`, so that it runs on an older tree too.
HOT_LOOP = """
import sys, time
from dwcp_inference.bench.floor_python import _our_answers
from dwcp_inference.bench.one_call import call
from dwcp_inference.services import decode

def _timed_calls(fn, seconds):
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            fn()
        calls += 100
    return (time.perf_counter() - started) / calls * 1e6

fn = call(_our_answers(), decode.choose("auto"), sys.argv[1])
for _ in range(200):
    fn()
print(_timed_calls(fn, float(sys.argv[2])))
"""


def profile(case: str, seconds: float, tree: Path | None = None) -> tuple[float, collections.Counter, int]:
    """py-spy over HOT_LOOP in its own process, on `tree`'s package (None: this one): (µs per call, samples per
    part, samples)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(tempfile.mkdtemp()) / "raw.txt"
    env, cwd = _environment(tree)
    done = subprocess.run([pyspy, "record", "--rate", "1000", "--nonblocking", "--format", "raw", "--output", str(out),
                           "--", sys.executable, "-c", HOT_LOOP, case, str(seconds)],
                          env=env, cwd=cwd, capture_output=True, text=True, check=True)
    us = float(re.findall(r"^[\d.]+$", done.stdout, re.M)[-1])
    return (us, *split(out.read_text()))


def _environment(tree: Path | None) -> tuple[dict[str, str], str | None]:
    """A process's environment and directory to run `tree`'s package (None: this one)."""
    env, cwd = dict(os.environ), None
    if tree is not None:
        from .ab import _package_from
        cwd = env["PYTHONPATH"] = _package_from(tree.resolve())
    return env, cwd


def _in(tree: Path | None, names: list[str], calls: int, together: int = 1) -> dict[str, float]:
    """per_call_us in a fresh process, on `tree`'s package (None: this one)."""
    env, cwd = _environment(tree)
    code = (f"import json; from dwcp_inference.bench.one_call import per_call_us; "
            f"print(json.dumps(per_call_us({names!r}, {calls}, {together})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpcs", default="all", help=f"comma-separated cases or RPCs, or all: {', '.join(CASES)}")
    parser.add_argument("--calls", type=int, default=2000, help="calls timed per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout to alternate with (its figures first)")
    parser.add_argument("--profile", action="store_true", help="split each case's call by part of its path")
    parser.add_argument("--seconds", type=float, default=8.0, help="--profile: seconds sampled per case")
    parser.add_argument("--together", type=int, default=1,
                        help="calls arriving together, computed as the coalescer does: beside one call alone")
    args = parser.parse_args(argv)
    names = cases(args.rpcs)
    if args.together > 1:
        return print_together(names, args.calls, args.rounds, args.together)
    if args.profile:
        for tree in ([args.against] if args.against else []) + [None]:
            print_profile(names, args.seconds, tree)
        return 0
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


def print_together(names: list[str], calls: int, rounds: int, together: int) -> int:
    """µs per call alone and per call of `together` arriving together (this tree, alternating rounds, best)."""
    runs: dict[int, list[dict[str, float]]] = {1: [], together: []}
    for _ in range(rounds):
        for n in runs:
            runs[n].append(_in(None, names, calls, n))
    best = {n: {c: min(r[c] for r in rs) for c in names} for n, rs in runs.items()}
    print(f"best of {rounds} rounds, {calls} calls each\n| case | alone µs | {together} together, µs per call | ratio |"
          "\n|---|---|---|---|")
    for c in names:
        print(f"| {c} | {best[1][c]:,.0f} | {best[together][c]:,.0f} | {best[together][c] / best[1][c]:.2f}x |")
    return 0


def print_profile(names: list[str], seconds: float, tree: Path | None = None) -> None:
    shares = {case: profile(case, seconds, tree) for case in names}
    print(f"{tree or 'this tree'}: µs of one call by part of its path (py-spy at 1000 Hz, {seconds:g} s of calls "
          "per case, while sampled)\n| part | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|")
    order = [p for p, _ in PARTS] + ["other"]
    for part in order:
        if any(parts[part] for _, parts, _ in shares.values()):
            print(f"| {part} | " + " | ".join(f"{us * parts[part] / (total or 1):,.1f}"
                                              for us, parts, total in shares.values()) + " |")
    print("| whole call | " + " | ".join(f"{us:,.0f}" for us, _, _ in shares.values()) + " |")


if __name__ == "__main__":
    sys.exit(main())
