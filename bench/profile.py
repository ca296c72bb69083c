"""Where a request's time goes: py-spy samples a running server while ghz drives one RPC, taking the thread
that holds the GIL (the Python work: threads waiting on locks, sockets or onnxruntime, which releases the GIL,
are not counted); the samples are summarised by stage of the request path and by function, as Markdown.
`dwcp-inference bench --profile` runs it in the same run as the table and stores it in the JSON.

    python -m dwcp_inference.bench.profile [--rpc PredictBandwidth] [--batch 1] [--seconds 15] [--out docs/profile.md]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import ghz
from .requests import BATCH_FORMS, CASES, method, request
from .suite import pinned, serving

# Stage of a sample: the innermost frame whose file matches, searched from the leaf outwards.
STAGES = [
    ("onnxruntime (the model)", r"onnxruntime/capi/"),
    ("micro-batching", r"services/batching\.py"),
    ("feature pipeline", r"dwcp_inference/features\.py"),
    ("message to columns", r"services/convert\.py:(?!.*(prediction|decision|verdict|timestamp|now))"),
    ("answers to messages", r"services/convert\.py"),
    ("decision rules", r"services/decisions\.py"),
    ("remembered predictions", r"services/outcomes\.py"),
    ("metrics", r"prometheus_client/|services/metrics\.py|services/runtime\.py:\d+ \(observe"),
    ("servicer and repository", r"services/(servicers|repository|runtime)\.py"),
    ("grpcio (Python side)", r"grpc/|concurrent/futures|threading\.py"),
    ("protobuf", r"google/protobuf/"),
]


def stage_of(frames: list[str], table: list[tuple[str, str]] = STAGES) -> str:
    """The name of the first (name, pattern) of `table` that matches the innermost frame any of them matches."""
    for frame in reversed(frames):
        for stage, pattern in table:
            if re.search(pattern, frame):
                return stage
    return "other"


def summarise(raw: str) -> tuple[collections.Counter, collections.Counter, int]:
    """(samples per stage, samples per leaf function, all samples) of py-spy's raw (collapsed) output."""
    stages: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first is the thread
        n = int(count)
        if not frames or "wait (threading.py" in frames[-1] or "_worker (concurrent" in frames[-1]:
            continue  # an idle worker thread
        total += n
        stages[stage_of(frames)] += n
        leaf = re.sub(r"\(/.*?(site-packages/|python3\.\d+/|dwcp_inference/|main/)", "(", frames[-1])
        leaves[leaf] += n
    return stages, leaves, total


def profile(case: str, batch: int, seconds: float, concurrency: int) -> str:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(tempfile.mkdtemp()) / "profile.txt"
    with serving("dwcp") as target:
        rpc = method(case)
        name, req = (rpc, request(case)) if batch == 1 else (BATCH_FORMS[rpc], request(case, batch))
        pid = _server_pid(target)
        ghz.run(target, name, req, concurrency=4, seconds=1, prefix=pinned(1))
        load = threading.Thread(target=ghz.run, args=(target, name, req),
                                kwargs={"concurrency": concurrency, "seconds": seconds + 2, "prefix": pinned(1),
                                        "extra": ("--cpus", "1")})
        load.start()
        subprocess.run([pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
                        "--format", "raw", "--nonblocking", "--gil", "--output", str(out)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load.join()
    return out.read_text()


def _server_pid(target: str) -> int:
    port = target.rsplit(":", 1)[1]
    ss = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    found = re.search(r"pid=(\d+)", ss)
    if not found:
        raise RuntimeError(f"no process listens on {target}")
    return int(found.group(1))


def record(case: str, batch: int, raw: str, concurrency: int) -> dict:
    """What the bench's JSON keeps of one profile: the shares by stage and of the top functions."""
    stages, leaves, total = summarise(raw)
    total = total or 1  # no sample: every share 0
    return {"case": case, "batch": batch, "concurrency": concurrency, "cores": os.cpu_count(), "samples": total,
            "stages": [[stage, n / total] for stage, n in stages.most_common()],
            "functions": [[leaf, n / total] for leaf, n in leaves.most_common(12)]}


def markdown(rec: dict) -> str:
    batch = rec["batch"]
    lines = [f"### {rec['case']}{'' if batch == 1 else f' (batch form, {batch} items)'}, "
             f"{rec['concurrency']} in flight", "",
             f"{rec['samples']} samples of the thread holding the GIL ({rec['cores']} cores, py-spy at 250 Hz; "
             "onnxruntime's own threads are not sampled, it releases the GIL while it runs).", "",
             "| stage of the request path | share |", "|---|---|"]
    lines += [f"| {stage} | {share:.1%} |" for stage, share in rec["stages"]]
    lines += ["", "| function (where the sample was taken) | share |", "|---|---|"]
    lines += [f"| `{leaf}` | {share:.1%} |" for leaf, share in rec["functions"]]
    return "\n".join(lines)


def report(case: str, batch: int, raw: str, concurrency: int) -> str:
    return markdown(record(case, batch, raw, concurrency))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc", default="PredictBandwidth", choices=CASES)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    text = report(args.rpc, args.batch, profile(args.rpc, args.batch, args.seconds, args.concurrency),
                  args.concurrency)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
