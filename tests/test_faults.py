"""Faults: with --workers N, a worker killed with SIGKILL is replaced and the others keep answering."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc

from .conftest import free_port
from .samples import link_history



def _call_with_retries(stub, request, tries: int = 5) -> str:
    """As the Go client does: UNAVAILABLE (the worker behind the connection died) is retried."""
    for attempt in range(tries):
        try:
            return stub.PredictBandwidth(request, timeout=5, wait_for_ready=True).model.version
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == tries - 1:
                raise
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


def test_a_killed_worker_is_replaced_and_the_others_keep_answering():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dwcp_inference.commands.cli", "serve", "--workers", "2", "--host",
                             "127.0.0.1", "--port", str(port), "--metrics-port", "-1", "--admin-port", "-1",
                             "--poll-seconds", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()

    def pids() -> dict[int, int]:
        return {int(m[1]): int(m[2]) for m in (re.match(r"worker (\d+) pid (\d+)", ln) for ln in list(lines)) if m}

    try:
        deadline = time.monotonic() + 60
        while sum("serving on" in ln for ln in list(lines)) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        first = pids()
        ok, failed = [0], []
        stop = threading.Event()
        lock = threading.Lock()

        def client() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = pb_grpc.InferenceServiceStub(ch)
                request = pb.PredictBandwidthRequest(history=link_history())
                while not stop.is_set():
                    try:
                        _call_with_retries(stub, request)
                        with lock:
                            ok[0] += 1
                    except grpc.RpcError as e:
                        with lock:
                            failed.append(f"{e.code().name}: {e.details()}")

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        before = ok[0]
        os.kill(first[1], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pids().get(1) == first[1]:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.1)
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join()
        after = ok[0] - before
        print(f"workers {first} -> {pids()}; {before} calls before the kill, {after} after, {len(failed)} failed")
        assert failed == [] and before > 50 and after > 50
        assert pids()[1] != first[1] and pids()[0] == first[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_short_soak_fifty_swaps_no_error_and_flat_memory():
    from dwcp_inference.commands import soak

    # Swaps from 14 s: the baseline (the report at 12 s) is a server whose code paths have all run once.
    summary = soak.run(0.8, interval=6, swaps=50, clients=4, outcome_capacity=2000, warmup_seconds=14, out=print)
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["swaps"] == 50 and summary["calls"] > 1000
    assert summary["growth_pct"] < 10, summary["rows"]
    assert len({r["fds"] for r in summary["rows"]}) == 1, "open files changed"


def _repo_server(repo, **kw):
    from .conftest import start_server

    return start_server(repo, metrics_port=-1, **kw)


def test_an_onnxruntime_error_fails_that_request_only(repo_copy):
    """A version whose graph fails inside onnxruntime at batch size 2 only (a Gather out of bounds), so it passes
    verification and the edge probe: the batch call of two fails, the rest serve."""
    import json

    import onnx
    from onnx import helper, numpy_helper

    from dwcp_inference import metadata

    vdir = repo_copy / "bandwidth_predictor" / "1"
    model = onnx.load(vdir / "model.onnx")
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
    for name, value in {"zero": 0, "two": 2, "hundred": 100}.items():
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(2, dtype=np.int64), "table"))
    model.graph.node.extend([
        helper.make_node("Shape", [f"{out}_raw"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["rows"]),
        helper.make_node("Equal", ["rows", "two"], ["is_two"]),
        helper.make_node("Cast", ["is_two"], ["is_two_int"], to=onnx.TensorProto.INT64),
        helper.make_node("Mul", ["is_two_int", "hundred"], ["index"]),  # 100 at two rows: out of the table
        helper.make_node("Gather", ["table", "index"], ["looked_up"]),
        helper.make_node("Cast", ["looked_up"], ["nothing"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Add", [f"{out}_raw", "nothing"], [out]),
    ])
    onnx.save(model, vdir / "model.onnx")
    meta = json.loads((vdir / "metadata.json").read_text())
    meta["sha256"] = metadata.sha256_file(vdir / "model.onnx")
    (vdir / "metadata.json").write_text(json.dumps(meta))
    running = _repo_server(repo_copy, poll_seconds=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            try:
                stub.PredictBandwidthBatch(pb.PredictBandwidthBatchRequest(histories=[link_history()] * 2))
                raise AssertionError("the batch should have failed inside onnxruntime")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INTERNAL and "internal error" in e.details()
            assert stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).model.version == "1"
    finally:
        running.stop(0)


def test_an_unreadable_repository_leaves_the_serving_versions(repo_copy):
    running = _repo_server(repo_copy, poll_seconds=0.1)
    moved = repo_copy.with_name("elsewhere")
    try:
        repo_copy.rename(moved)  # unmounted, deleted, or unreadable: the scan fails
        time.sleep(0.5)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            assert stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).model.version == "1"
        assert set(running.repository.loaded()) == {"bandwidth_predictor", "compression_selector",
                                                    "reliability_detector", "consensus_latency"}
    finally:
        running.stop(0)


def test_a_disk_that_fills_during_a_publish_leaves_nothing_and_the_serving_version(repo_copy):
    """The publish runs with a file-size limit (as a full disk would stop it) and fails part way."""
    script = f"""
import resource, signal, numpy as np
from pathlib import Path
from dwcp_inference import metadata
from dwcp_inference.export import publish
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
src = Path({str(repo_copy / 'bandwidth_predictor' / '1')!r})
meta = metadata.read(src)
onnx_bytes = (src / "model.onnx").read_bytes()
x = np.asarray([v["input"] for v in meta.test_vectors] * 64, dtype=np.float32)
ref = publish.run_onnx(onnx_bytes, x)
resource.setrlimit(resource.RLIMIT_FSIZE, (len(onnx_bytes) // 2, len(onnx_bytes) // 2))
try:
    publish.publish(Path({str(repo_copy)!r}), meta, onnx_bytes, x, ref)
except OSError as e:
    print("publish failed:", e)
"""
    running = _repo_server(repo_copy, poll_seconds=0.1)
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert "publish failed" in proc.stdout, proc.stdout + proc.stderr
        entries = sorted(p.name for p in (repo_copy / "bandwidth_predictor").iterdir())
        assert entries == ["1"], f"a failed publish left {entries}"
        time.sleep(0.3)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            assert stub.PredictBandwidth(pb.PredictBandwidthRequest(history=link_history())).model.version == "1"
    finally:
        running.stop(0)
