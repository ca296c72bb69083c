"""The classifiers' path end to end, for the compression selector, on a real server and the real controller: a
challenger in staging is shadowed beside the champion, judged by McNemar's exact test on the outcomes a client
reports, goes through the canary and becomes stable.

The world: (link, payload) pairs from the selector's own data generator (training/compression.py, a seed it was
not trained on), the reported best choice being the generator's fastest one. The champion (version 1) is the
bundled selector degraded to always pick `none` (right about a third of the time); the challenger (version 2) is
the bundled selector (right about nine times in ten).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from dwcp_inference.api import admin_pb2 as apb
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.api import inference_pb2_grpc as pb_grpc

from .test_continuous_e2e import _wait_event
from .test_continuous_rollbacks import Setup, copy_version

MODEL = "compression_selector"
ALWAYS_NONE = [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]  # probabilities over the metadata's choices, `none` first


def always_none(src: Path, dst: Path) -> None:
    """The version with its probabilities replaced by ALWAYS_NONE (its test vectors updated to match)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(src / "model.onnx")
    g = model.graph
    producer = next(n for n in g.node if "probabilities" in n.output)
    producer.output[list(producer.output).index("probabilities")] = "probabilities_learnt"
    g.initializer.extend([numpy_helper.from_array(np.array(ALWAYS_NONE, np.float32), "fixed"),
                          numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    g.node.extend([onnx.helper.make_node("Mul", ["probabilities_learnt", "zero"], ["nothing"]),
                   onnx.helper.make_node("Add", ["nothing", "fixed"], ["probabilities"])])
    staging = dst.parent / f".{dst.name}"
    shutil.copytree(src, staging)
    onnx.save(model, staging / "model.onnx")
    meta = json.loads((staging / "metadata.json").read_text())
    for vector in meta["test_vectors"]:
        vector["outputs"]["probabilities"] = ALWAYS_NONE
    (staging / "metadata.json").write_text(json.dumps(meta, indent=1))
    copy_version(staging, dst)
    shutil.rmtree(staging)


class CompressionTraffic(threading.Thread):
    """One client: asks which codec to use for a (link, payload) and reports the fastest one."""

    LINKS = {"dc": pb.LINK_TYPE_DC, "metro": pb.LINK_TYPE_METRO, "wan": pb.LINK_TYPE_WAN, "edge": pb.LINK_TYPE_EDGE}
    CODECS = {"none": pb.CODEC_NONE, "lz4": pb.CODEC_LZ4, "zstd": pb.CODEC_ZSTD}

    def __init__(self, target: str):
        from dwcp_inference.training.compression import CHOICES, generate

        super().__init__(daemon=True)
        self.stub = pb_grpc.InferenceServiceStub(grpc.insecure_channel(target))
        self.world, self.choices = generate(rows=3000, chunks=40, seed=99), CHOICES
        self.calls = self.failures = 0
        self.errors: list[str] = []
        self.answered_by: dict[str, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        w, i = self.world, 0
        while not self.stopping.is_set():
            i = (i + 1) % len(w["best_choice"])
            best = self.choices[w["best_choice"][i]]
            try:
                r = self.stub.SelectCompression(pb.SelectCompressionRequest(
                    link=pb.LinkState(throughput_mbps=float(w["throughput_mbps"][i]), rtt_ms=float(w["rtt_ms"][i]),
                                      link_type=self.LINKS[str(w["link_type"][i])],
                                      packet_loss=float(w["packet_loss"][i])),
                    payload=pb.PayloadTraits(size_bytes=int(w["size_bytes"][i]),
                                             entropy_bits_per_byte=float(w["payload_entropy"][i]),
                                             recent_compression_ratio=float(w["payload_ratio"][i]))), timeout=10)
                self.answered_by[r.model.version] = self.answered_by.get(r.model.version, 0) + 1
                self.stub.ReportOutcome(pb.ReportOutcomeRequest(
                    prediction_id=r.decision.prediction_id,
                    best_choice=pb.CompressionChoice(codec=self.CODECS[best["codec"]], level=best["level"])),
                    timeout=10)
            except grpc.RpcError as e:
                self.failures += 1
                self.errors.append(f"{e.code().name}: {e.details()}")
            self.calls += 1
            time.sleep(0.002)


@pytest.mark.timeout(120)
def test_a_better_selector_is_shadowed_judged_by_mcnemar_and_promoted_through_the_canary(tmp_path: Path):
    setup = Setup(tmp_path, model=MODEL, make_1=always_none, make_2=copy_version, traffic=CompressionTraffic,
                  serve_flags=("--shadow-fraction", "1"))
    try:
        setup.loaded()
        setup.admin.Promote(apb.PromoteRequest(model=MODEL, label="stable", version="1"), timeout=30)
        setup.admin.SetStage(apb.SetStageRequest(model=MODEL, version="1", stage="production"), timeout=30)
        setup.admin.SetStage(apb.SetStageRequest(model=MODEL, version="2", stage="staging"), timeout=30)
        setup.until(lambda m: m.labels["stable"] == "1" and m.labels["candidate"] == "2")
        # where the controller is once it has published a challenger
        setup.state_is({"phase": "shadow", "challenger": "2", "champion": "1", "since": time.time(), "run_id": ""})
        setup.controller("--min-outcomes", "30", "--margin", "0.1", "--alpha", "0.01", "--canary-weight", "50",
                         "--canary-outcomes", "30", "--watch-margin", "100", "--accuracy-margin", "100",
                         "--drift-threshold", "1000")
        setup.traffic.start()

        canary = _wait_event(setup.state, "canary", 60, procs=tuple(setup.procs))
        figures = canary["figures"]
        assert canary["challenger"] == "2" and figures["test"] == "McNemar exact (one-sided)"
        assert figures["p_better"] < 0.01 and figures["only_challenger_right"] > figures["only_champion_right"]
        promote = _wait_event(setup.state, "promote", 60, procs=tuple(setup.procs))
        assert promote["challenger"] == "2" and promote["champion"] == "1"
        setup.until(lambda m: m.labels["stable"] == "2" and not m.split and "canary" not in m.labels
                    and {v.version: v.stage for v in m.versions} == {"1": "archived", "2": "production"})
        before = setup.traffic.answered_by.get("2", 0)
        deadline = time.monotonic() + 30
        while setup.traffic.answered_by.get("2", 0) <= before + 10:  # stable answers now
            assert time.monotonic() < deadline, setup.traffic.answered_by
            time.sleep(0.1)
    finally:
        setup.close()
