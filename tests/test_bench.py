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


def test_one_call_times_the_servers_path_from_bytes_to_bytes():
    """bench.one_call runs what the server runs for a call: the request's bytes in, the response's bytes out."""
    from dwcp_inference.api import inference_pb2 as pb
    from dwcp_inference.bench import one_call
    from dwcp_inference.services import decode

    decoder = decode.choose("auto")
    answer = one_call.call(_our_answers(), decoder, "DetectAnomaly")()
    assert type(answer) is bytes and pb.DetectAnomalyResponse.FromString(answer).verdict.score >= 0
    times = one_call.per_call_us(["DetectAnomaly", "SelectCompression/traits"], calls=20)
    assert set(times) == {"DetectAnomaly", "SelectCompression/traits"} and all(v > 0 for v in times.values())


def test_another_tree_is_served_with_every_package_its_pyproject_maps(tmp_path):
    """bench.ab's `tree=` (and one_call's --against) import every package from that tree, laid out as its
    pyproject.toml's package-dir says (commands/ included), never the installed one's."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from dwcp_inference.bench import ab

    repo = Path(__file__).resolve().parents[1]
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(repo / "pyproject.toml", tree)
    packages = ab.package_dirs(tree)
    assert "dwcp_inference.commands" in packages
    for directory in packages.values():
        (tree / directory).mkdir(exist_ok=True)
        (tree / directory / "__init__.py").write_text("")
    path = ab._package_from(tree)
    code = f"import importlib; print('\\n'.join(importlib.import_module(n).__file__ for n in {sorted(packages)!r}))"
    done = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": path}, cwd=path, capture_output=True,
                          text=True, check=True)
    files = [Path(f).resolve() for f in done.stdout.split()]
    assert files == [(tree / packages[n] / "__init__.py").resolve() for n in sorted(packages)]


def test_one_calls_profile_splits_a_sample_by_the_innermost_part_it_was_in():
    """bench.one_call --profile: each py-spy sample of the timed loop goes to the innermost frame that names a part
    of the path (a Samples method to its caller's part); samples outside the loop are left out."""
    from dwcp_inference.bench import one_call

    loop = "<module> (<string>:22);_timed_calls (<string>:15);<lambda> (bench/one_call.py:41);" \
           "rpc.<locals>.wrapper (services/servicers.py:57)"
    raw = "\n".join([
        f"{loop};InferenceServicer._bandwidth (services/servicers.py:119);bandwidth (services/decisions.py:218);"
        "ModelRuntime.infer (services/runtime.py:220);ModelRuntime.run_raw (services/runtime.py:209);"
        "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:406) 7",
        f"{loop};bandwidth (services/decisions.py:219);ModelRuntime.compute (services/runtime.py:233);"
        "Pipeline.validate (dwcp_inference/features.py:346);_all (numpy/_core/_methods.py:70) 3",
        f"{loop};network (services/convert.py:117);_windows (services/convert.py:87);"
        "Samples.numeric (services/decode.py:82) 2",
        f"{loop};parsed (dwcp_inference/services/decode.py:50);"  # as another tree's package names it
        "native_deserializer.<locals>.parse (/tmp/ab-tree-x/dwcp_inference/services/decode.py:317) 4",
        f"{loop};Reply.render (services/encode.py:65);OutcomeTracker.remember_many (services/outcomes.py:93) 5",
        f"{loop};bandwidth (services/encode.py:103);seconds_nanos (services/convert.py:225) 1",
        f"{loop} 1",
        "<module> (<string>:18);_our_answers (bench/floor_python.py:45) 50",
    ])
    parts, total = one_call.split(raw)
    assert total == 23
    assert parts == {"model (onnxruntime session)": 7, "validation (features.Pipeline)": 3,
                     "columns checked, payload traits (convert)": 2, "bytes to columns (decode)": 4,
                     "prediction ids": 5, "response bytes": 1, "rpc wrapper and servicer": 1}


def test_select_compression_is_measured_as_the_go_drop_in_sends_it_and_with_traits():
    import re
    from pathlib import Path

    from dwcp_inference.bench.requests import CASES, SAMPLE_BYTES, cases

    go = (Path(__file__).resolve().parents[1] / "clients/go/encoding/encoding.go").read_text()
    assert int(re.search(r"const SampleBytes = (\d+)", go).group(1)) == SAMPLE_BYTES
    assert cases("SelectCompression") == ["SelectCompression/sample", "SelectCompression/traits"]
    assert set(cases("all")) == set(CASES)
    sample = request("SelectCompression/sample").payload
    assert len(sample.sample) == SAMPLE_BYTES and sample.size_bytes > SAMPLE_BYTES
    assert not sample.HasField("entropy_bits_per_byte")
    traits = request("SelectCompression/traits").payload
    assert traits.HasField("entropy_bits_per_byte") and not traits.sample
    batch = request("SelectCompression/sample", 3).queries
    assert len({q.payload.sample for q in batch}) == 3  # items differ, as a real batch's do
    with pytest.raises(ValueError, match="unknown 'Nope'"):
        cases("Nope")


def _row(server, rpc, batch, p50=None, qps64=None, dps=None):
    return {"server": server, "rpc": rpc, "batch": batch, "p50_us": p50, "p99_us": p50, "qps_c16": qps64,
            "qps_c64": qps64, "decisions_per_s": dps}


FRACTION_ROWS = [
    _row("dwcp", "PredictBandwidth", 1, p50=700.0, qps64=1500.0, dps=1500.0),
    _row("dwcp", "PredictBandwidth", 64, p50=9000.0, dps=12000.0),
    _row("floor-python", "PredictBandwidth", 1, p50=350.0, qps64=6000.0, dps=6000.0),
    _row("floor-python", "PredictBandwidth", 64, p50=16000.0, dps=48000.0),
    _row("inprocess", "PredictBandwidth", 1, p50=100.0, dps=10000.0),
    _row("inprocess", "PredictBandwidth", 16, p50=500.0, dps=30000.0),
    _row("inprocess", "PredictBandwidth", 64, p50=2000.0, dps=32000.0),
    _row("mlserver-default", "PredictBandwidth", 1, p50=1200.0, qps64=700.0, dps=700.0),
    _row("mlserver-pw0", "PredictBandwidth", 1, p50=750.0, qps64=1200.0, dps=1200.0),
]


def test_the_bench_states_the_fractions_of_the_ideal():
    f = suite.fractions(FRACTION_ROWS, idle_rss_mib=120.0)
    (c,) = f["cases"]
    assert c["ideal_qps_c64"] == pytest.approx(1 / (1 / 6000 + 1 / 30000))  # 5,000
    assert c["qps_c64_fraction"] == pytest.approx(1500 / 5000)
    assert c["ideal_batch64_decisions_per_s"] == pytest.approx(1 / (1 / 48000 + 1 / 32000))  # 19,200
    assert c["batch64_fraction"] == pytest.approx(12000 / 19200)
    assert c["ideal_p50_us"] == pytest.approx(350 + 100 + 50) and c["p50_over_ideal_us"] == pytest.approx(200)
    assert f["mlserver_best_qps_c64"] == 1200.0 and f["predict_bandwidth_over_mlserver"] == pytest.approx(1.25)
    text = suite.fractions_table(f, 2)
    assert "(2 cores;" in text
    assert "| PredictBandwidth | 0.30 | 0.62 | +200 µs | 5,000 | 19,200 | 500 |" in text
    assert "over MLServer's best (1,200): 1.25x (target >= 2.5x): missed" in text
    assert "idle server RSS on the bundled models: 120 MiB (target <= 150): met" in text


def test_fractions_leave_out_what_was_not_measured():
    f = suite.fractions([r for r in FRACTION_ROWS if r["server"] != "inprocess"])
    assert f["cases"] == [] and f["idle_rss_mib"] is None
    text = suite.fractions_table(suite.fractions(FRACTION_ROWS[:7]), 2)
    assert "not measured (run with --peers)" in text and "RSS" not in text


def test_the_performance_page_names_the_commit_and_keeps_the_prose_verbatim():
    from dwcp_inference.bench import report

    result = {"commit": "0123456789abcdef", "subject": "s", "dirty": ["bench/suite.py"], "when": "t", "cores": 2,
              "command": "dwcp-inference bench", "rounds": 2, "seconds": 3, "rows": FRACTION_ROWS,
              "fractions": suite.fractions(FRACTION_ROWS, 100.0),
              "stages": [{"case": "PredictBandwidth", "batch": 1, "servicer_us": 271.0, "features_us": 141.0,
                          "model_us": 72.0}],
              "profiles": [{"case": "PredictBandwidth", "batch": 1, "concurrency": 16, "cores": 2, "samples": 10,
                            "stages": [["grpcio (Python side)", 1.0]], "functions": [["_serve (grpc)", 1.0]]}]}
    page = report.render(result, "## Notes\n\nwhy *we* chose this\n")
    assert "Commit measured: `0123456789ab` (s), with uncommitted changes to `bench/suite.py`" in page
    assert "| PredictBandwidth | 0.30 | 0.62 | +200 µs |" in page
    assert "| PredictBandwidth | 1 | 271 | 141 | 72 |" in page and "| grpcio (Python side) | 100.0% |" in page
    assert page.endswith("## Notes\n\nwhy *we* chose this\n")


def test_the_committed_performance_page_is_what_the_generator_makes_of_the_committed_json():
    import json
    from pathlib import Path

    from dwcp_inference.bench import report

    docs = Path(__file__).resolve().parents[1] / "docs"
    result = json.loads((docs / "performance.json").read_text())
    assert result["commit"] and result["cores"] and result["fractions"]["cases"]
    assert (docs / "performance.md").read_text() == report.render(result, report.NOTES.read_text()), (
        "regenerate: python -m dwcp_inference.bench.report docs/performance.json > docs/performance.md")


def test_the_bench_json_names_the_commit_measured():
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=suite.HERE.parent, capture_output=True, text=True)
    assert suite.measured_commit()["commit"] == head.stdout.strip()
