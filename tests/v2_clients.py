"""The client half of tests/test_v2.py, run by `.venv-v2clients/bin/python` (made by `make setup`): the Open
Inference Protocol's real clients against a running server, each in its own process (tritonclient and kserve both
define proto package `inference` and cannot be imported together, nor beside our protobuf 7).

    python tests/v2_clients.py triton|kserve HOST:PORT [ROOT_CA_PEM]

Prints one JSON object: readiness, each model's metadata, each model's outputs, and the wrong-shape call's status
and message. The requests are those of tests/samples.py, as tensors."""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np

MODELS = ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency")
SAMPLE = (b"hello world " * 300)


def tensors(model: str) -> dict[str, np.ndarray]:
    """Two items of tests/samples.py's valid requests per model."""
    if model == "bandwidth_predictor":
        i = np.arange(30)
        return {"bandwidth_mbps": np.tile(500.0 + 10 * (i % 5), (2, 1)), "latency_ms": np.tile(20.0 + i % 3, (2, 1)),
                "packet_loss": np.full((2, 30), 0.001), "jitter_ms": np.full((2, 30), 2.0),
                "time_of_day": np.tile(((9 + i // 12) % 24).astype(np.int32), (2, 1)),
                "day_of_week": np.full((2, 30), 2, dtype=np.int32)}
    if model == "compression_selector":
        return {"throughput_mbps": np.array([100.0, 100.0]), "rtt_ms": np.array([40.0, 40.0]),
                "packet_loss": np.array([0.001, 0.001]), "link_type": np.array([b"wan", b"dc"], dtype=object),
                "size_bytes": np.array([1 << 20, 1 << 20], dtype=np.int64),
                "payload_sample": np.array([SAMPLE, SAMPLE], dtype=object)}
    if model == "reliability_detector":
        return {"error_rate": np.array([0.004, 0.2]), "timeout_rate": np.array([0.002, 0.002]),
                "latency_p50_ms": np.array([20.0, 20.0]), "latency_p99_ms": np.array([55.0, 55.0]),
                "sla_violations": np.zeros(2), "connection_failures": np.zeros(2),
                "packet_loss_rate": np.array([0.001, 0.001]), "cpu_usage": np.array([0.4, 0.4]),
                "memory_usage": np.array([0.45, 0.45]), "disk_io_mbps": np.array([20.0, 20.0])}
    numbers = {"queue_depth": 5.0, "proposals_pending": 3.0, "proposals_committed": 200.0, "latency_p50_ms": 10.0,
               "latency_p95_ms": 20.0, "latency_p99_ms": 30.0, "leader_changes": 0.0, "quorum_size": 3.0,
               "active_nodes": 5.0}
    out = {k: np.full((2, 20), v) for k, v in numbers.items()}
    for k, v in (("network_tier", b"tier2"), ("dwcp_mode", b"datacenter"), ("consensus_type", b"raft")):
        out[k] = np.full((2, 20), v, dtype=object)
    return out


def datatype(a: np.ndarray) -> str:
    return {"f": "FP64", "i": "INT64" if a.dtype.itemsize == 8 else "INT32", "O": "BYTES"}[a.dtype.kind]


def plain(a: np.ndarray) -> list:
    return [v.decode() if isinstance(v, bytes) else v for v in a.reshape(-1).tolist()]


def triton(target: str, ca: str | None) -> dict:
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    client = tg.InferenceServerClient(url=target, ssl=ca is not None, root_certificates=ca)
    out: dict = {"live": client.is_server_live(), "ready": client.is_server_ready(),
                 "models_ready": {m: client.is_model_ready(m) for m in MODELS},
                 "metadata": {m: client.get_model_metadata(m, as_json=True) for m in MODELS}, "outputs": {}}

    def infer(model: str, data: dict[str, np.ndarray]):
        inputs = []
        for name, a in data.items():
            t = tg.InferInput(name, list(a.shape), datatype(a))
            t.set_data_from_numpy(a)  # raw_input_contents
            inputs.append(t)
        return client.infer(model, inputs)

    for m in MODELS:
        result = infer(m, tensors(m))
        response = result.get_response()
        out["outputs"][m] = {o.name: {"shape": list(o.shape), "values": plain(result.as_numpy(o.name))}
                             for o in response.outputs}
        out["outputs"][m]["model_version"] = response.model_version
    bad = tensors("bandwidth_predictor")
    bad["latency_ms"] = bad["latency_ms"][:, :20]
    try:
        infer("bandwidth_predictor", bad)
        out["wrong_shape"] = None
    except InferenceServerException as e:
        out["wrong_shape"] = {"status": e.status(), "message": e.message()}
    return out


async def _kserve(target: str, ca: str | None) -> dict:
    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc

    client = InferenceGRPCClient(url=target, use_ssl=ca is not None, root_certificates=ca)
    out: dict = {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
                 "models_ready": {m: await client.is_model_ready(m) for m in MODELS}, "outputs": {}}
    # InferenceGRPCClient has no metadata call: KServe's own stub, over a channel like the client's
    if ca:
        with open(ca, "rb") as f:
            channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(f.read()))
    else:
        channel = grpc.insecure_channel(target)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    out["metadata"] = {}
    for m in MODELS:
        md = stub.ModelMetadata(pb.ModelMetadataRequest(name=m))
        out["metadata"][m] = {"name": md.name, "versions": list(md.versions), "platform": md.platform,
                              "inputs": [{"name": t.name, "datatype": t.datatype, "shape": [str(d) for d in t.shape]}
                                         for t in md.inputs],
                              "outputs": [{"name": t.name, "datatype": t.datatype,
                                           "shape": [str(d) for d in t.shape]} for t in md.outputs]}
    channel.close()

    def request(model: str, data: dict[str, np.ndarray]) -> InferRequest:
        inputs = []
        for name, a in data.items():
            t = InferInput(name, list(a.shape), datatype(a))
            t.set_data_from_numpy(a, binary_data=False)  # contents, not raw
            inputs.append(t)
        return InferRequest(model_name=model, infer_inputs=inputs)

    for m in MODELS:
        response = await client.infer(request(m, tensors(m)))
        out["outputs"][m] = {o.name: {"shape": list(o.shape), "values": plain(np.asarray(o.as_numpy()))}
                             for o in response.outputs}
        out["outputs"][m]["model_version"] = response.model_version
    bad = tensors("bandwidth_predictor")
    bad["latency_ms"] = bad["latency_ms"][:, :20]
    try:
        await client.infer(request("bandwidth_predictor", bad))
        out["wrong_shape"] = None
    except grpc.RpcError as e:
        out["wrong_shape"] = {"status": str(e.code()), "message": e.details()}
    await client.close()
    return out


def main() -> None:
    kind, target = sys.argv[1], sys.argv[2]
    ca = sys.argv[3] if len(sys.argv) > 3 else None
    result = triton(target, ca) if kind == "triton" else asyncio.run(_kserve(target, ca))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
