"""The peer: Seldon MLServer serving the same ONNX model as ours through a small custom runtime
(bench/mlserver-peer/runtime.py), over its gRPC API (the V2 inference protocol), with its default settings and
with parallel_workers=0. MLServer lives in its own virtual environment, made on first use from
bench/mlserver-peer/requirements.txt."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


from . import ghz
from .floor_python import MODELS
from .requests import method
from .suite import free_port, pinned, stop

HERE = Path(__file__).resolve().parent / "mlserver-peer"
VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dwcp-inference" / "mlserver-venv"


def venv() -> Path:
    """MLServer's virtual environment, made (and its requirements installed) when missing or out of date."""
    stamp = VENV / "requirements.txt"
    wanted = (HERE / "requirements.txt").read_text()
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"[bench] installing MLServer into {VENV} (once)", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin/pip"), "install", "-q", "-r", str(HERE / "requirements.txt")], check=True)
        stamp.write_text(wanted)
    return VENV


@functools.cache
def protoset() -> Path:
    """MLServer's gRPC API (dataplane.proto, from its generated module) as a descriptor set for ghz."""
    out = Path(tempfile.gettempdir()) / "mlserver-dataplane.protoset"
    script = ("from google.protobuf import descriptor_pb2 as d; from mlserver.grpc import dataplane_pb2 as p;"
              "s = d.FileDescriptorSet(); s.file.add().ParseFromString(p.DESCRIPTOR.serialized_pb);"
              f"open({str(out)!r}, 'wb').write(s.SerializeToString())")
    subprocess.run([str(venv() / "bin/python"), "-c", script], check=True)
    return out


@functools.cache
def _servicer() -> Any:
    from .floor_python import _our_answers

    return _our_answers()  # the bundled models, loaded once


V2_TYPES = {"float32": ("FP32", "fp32_contents"), "float64": ("FP64", "fp64_contents"),
            "int64": ("INT64", "int64_contents"), "int32": ("INT32", "int_contents"), "bool": ("BOOL", "bool_contents")}


def infer_request(case: str, batch: int = 1) -> dict[str, Any]:
    """The V2 request carrying the model inputs our server computes for the same request (its features, or the
    prepared raw columns of a version holding its features in its graph)."""
    from .floor_python import model_input

    _, _, feed = model_input(_servicer(), case, batch)
    inputs = []
    for name, x in feed.items():
        datatype, contents = V2_TYPES[str(x.dtype)]
        inputs.append({"name": name, "datatype": datatype, "shape": list(x.shape),
                       "contents": {contents: x.ravel().tolist()}})
    return {"model_name": MODELS[method(case)], "inputs": inputs}


@contextmanager
def serving(rpcs: list[str], parallel_workers: int | None) -> Iterator[str]:
    from dwcp_inference.services.settings import bundled_models

    root = Path(tempfile.mkdtemp(prefix="mlserver-"))
    grpc_port = free_port()
    settings = {"grpc_port": grpc_port, "http_port": free_port(), "metrics_port": free_port(), "debug": False}
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (root / "settings.json").write_text(json.dumps(settings))
    shutil.copy(HERE / "runtime.py", root / "runtime.py")
    for model in dict.fromkeys(MODELS[method(case)] for case in rpcs):
        d = root / model
        d.mkdir()
        shutil.copy(bundled_models() / model / "1" / "model.onnx", d / "model.onnx")
        (d / "model-settings.json").write_text(json.dumps({
            "name": model, "implementation": "runtime.OnnxModel", "parameters": {"uri": str(d / "model.onnx")}}))
    log = open(root / "mlserver.log", "w")
    proc = subprocess.Popen([*pinned(0), str(venv() / "bin/mlserver"), "start", str(root)], cwd=root,
                            stdout=log, stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{grpc_port}"
    try:
        _wait(target, rpcs[0], proc, root)
        yield target
    finally:
        stop(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait(target: str, rpc: str, proc: subprocess.Popen, root: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"MLServer exited: {(root / 'mlserver.log').read_text()[-2000:]}")
        if runner(target, rpc)(1, 1, 0.3)["statuses"].get("OK"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"MLServer did not answer within {timeout:.0f} s: {(root / 'mlserver.log').read_text()[-2000:]}")


def runner(target: str, rpc: str) -> Any:
    """ghz against MLServer's ModelInfer, carrying the model input our server computes for `rpc`."""
    requests: dict[int, dict[str, Any]] = {}

    def run(batch: int, concurrency: int, seconds: float) -> dict[str, Any]:
        if batch not in requests:
            requests[batch] = infer_request(rpc, batch)
        return ghz.run(target, "", requests[batch], concurrency=concurrency, seconds=seconds,
                       extra=("--cpus", "1"), prefix=pinned(1),
                       call="inference.GRPCInferenceService/ModelInfer", protoset_path=protoset())
    return run
