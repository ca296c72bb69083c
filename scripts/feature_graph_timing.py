"""Time per call, before and after the feature graph, for each bundled model at batch 1 and 16 (not a test: the
figures go in the closing note). Run: .venv/bin/python scripts/feature_graph_timing.py

before: features.Pipeline (validate + transform) and onnxruntime on the feature matrix (the trained model);
after:  the same validation, the raw feed (category lookups) and onnxruntime on the composed graph.
"model only" is the onnxruntime call alone in each case. Rounds alternate before/after; medians are printed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dwcp_inference import features, metadata
from dwcp_inference.export import feature_graph, publish
from dwcp_inference.raw_inputs import graph_feed_plan
from dwcp_inference.services.settings import bundled_models

MODELS = ("bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency")


def session(onnx_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.enable_cpu_mem_arena = 1, 1, False
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def per_call_us(fn, calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls * 1e6


def main() -> None:
    out = Path(tempfile.mkdtemp())
    print(f"{'model':22} {'batch':>5} {'model only before':>18} {'after':>8} "
          f"{'with features before':>21} {'after':>8}  (µs)")
    for model in MODELS:
        src = bundled_models() / model / "1"
        plain = feature_graph.trained_part((src / metadata.MODEL_FILE).read_bytes())
        x = np.asarray([v["input"] for v in metadata.read(src).test_vectors] * 64, dtype=np.float32)
        exact = ["label"] if model == "reliability_detector" else ()
        meta = metadata.read(publish.publish(out, metadata.read(src), plain, x, publish.run_onnx(plain, x),
                                             exact=exact, with_features=False))
        vdir = publish.publish(out, metadata.read(src), plain, x, publish.run_onnx(plain, x), exact=exact)
        composed_meta = metadata.read(vdir)
        before, after = session(plain), session((vdir / metadata.MODEL_FILE).read_bytes())
        pipeline = features.Pipeline(meta.raw_fields, meta.features)
        plan = graph_feed_plan(composed_meta)
        names = [o.name for o in composed_meta.outputs]
        for batch in (1, 16):
            raw = feature_graph.sample_raw(meta, batch, np.random.default_rng(batch))
            fx = pipeline.transform(raw)
            feed = {n: prep(raw[n]) for n, prep in plan}
            runs = {
                "model before": lambda: before.run(names, {meta.inputs[0].name: fx}),
                "model after": lambda: after.run(names + [composed_meta.feature_output], feed),
                "full before": lambda: before.run(names, {meta.inputs[0].name: pipeline.transform(raw)})
                if pipeline.validate(raw) is None else None,
                "full after": lambda: after.run(names + [composed_meta.feature_output],
                                                {n: prep(raw[n]) for n, prep in plan})
                if pipeline.validate(raw) is None else None,
            }
            samples: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(15):  # alternating rounds
                for k, fn in runs.items():
                    samples[k].append(per_call_us(fn, 200))
            m = {k: statistics.median(v) for k, v in samples.items()}
            print(f"{model:22} {batch:>5} {m['model before']:>18.1f} {m['model after']:>8.1f} "
                  f"{m['full before']:>21.1f} {m['full after']:>8.1f}")


if __name__ == "__main__":
    main()
