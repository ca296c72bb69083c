"""The benchmark harness's own pieces: the floor answers as large as ours, the table's ratios, the profile's
summary. (The harness itself runs in CI's short bench stage.)"""

from __future__ import annotations

import pytest

from dwcp_inference.bench import profile, suite
from dwcp_inference.bench.floor_python import Floor, _Context, _our_answers
from dwcp_inference.bench.requests import BATCH_FORMS, RPCS, request


def test_the_python_floor_answers_with_messages_of_our_size():
    floor, ours = Floor(), _our_answers()
    for rpc in RPCS:
        for n in (1, 16, 5):
            name = rpc if n == 1 else BATCH_FORMS[rpc]
            ref = getattr(ours, name)(request(rpc, n), _Context())
            canned = getattr(floor, name)(request(rpc, n), None)
            assert type(canned) is type(ref)
            assert abs(canned.ByteSize() - ref.ByteSize()) <= 4 * n, name  # ids and floats vary a little


def test_the_table_states_ratios_to_the_floors():
    rows = [
        {"server": "dwcp", "rpc": "PredictBandwidth", "batch": 1, "p50_us": 500.0, "p99_us": 900.0,
         "qps_c16": 2000.0, "qps_c64": 1800.0, "decisions_per_s": 2000.0},
        {"server": "dwcp", "rpc": "PredictBandwidth", "batch": 64, "p50_us": 9000.0, "p99_us": 12000.0,
         "qps_c16": 300.0, "qps_c64": None, "decisions_per_s": 19200.0},
        {"server": "floor-python", "rpc": "PredictBandwidth", "batch": 1, "p50_us": 400.0, "p99_us": 800.0,
         "qps_c16": 4000.0, "qps_c64": 4000.0, "decisions_per_s": 4000.0},
        {"server": "floor-go", "rpc": "PredictBandwidth", "batch": 1, "p50_us": 150.0, "p99_us": 300.0,
         "qps_c16": 16000.0, "qps_c64": 20000.0, "decisions_per_s": 20000.0},
    ]
    text = suite.table(rows)
    assert "| dwcp | PredictBandwidth | 1 | 500 | 900 | 2,000 | 1,800 | 2,000 | 1.25 | 0.45 | 0.10 |" in text
    lines = suite.targets(rows)
    assert lines[0].startswith("p50 sequential: 1.25x") and lines[0].endswith("MISSED")
    assert lines[1].startswith("QPS at 64 in flight: 0.45x")
    assert "0.96x the calls/s of the empty grpc-go server (20,000)" in lines[2]


def test_profile_samples_are_summed_by_stage_from_the_leaf_outwards():
    raw = "\n".join([
        "thread (0x1);_worker (concurrent/futures/thread.py:80);wrapper (services/servicers.py:40);"
        "run (/x/site-packages/onnxruntime/capi/onnxruntime_inference_collection.py:270) 30",
        "thread (0x1);wrapper (services/servicers.py:40);transform (dwcp_inference/features.py:305);"
        "_stack (numpy/_core/shape_base.py:10) 10",
        "thread (0x2);_worker (concurrent/futures/thread.py:80);wait (threading.py:320) 500",
        "thread (0x3);_call (grpc/_server.py:700) 10",
    ])
    stages, leaves, total = profile.summarise(raw)
    assert total == 50
    assert stages == {"onnxruntime (the model)": 30, "feature pipeline": 10, "grpcio (Python side)": 10}
    assert sum(leaves.values()) == 50


@pytest.mark.parametrize("rpc", RPCS)
def test_every_benchmark_request_is_valid(rpc):
    ours = _our_answers()
    assert getattr(ours, rpc)(request(rpc), _Context()).model.name
    assert getattr(ours, BATCH_FORMS[rpc])(request(rpc, 3), _Context()).model.name


def test_stages_time_each_part_of_the_servicer():
    from dwcp_inference.bench import stages

    s = stages.stages("DetectAnomaly", 1, calls=20)
    assert set(s) == {"servicer", "validation, features, model", "model"} and all(v > 0 for v in s.values())
