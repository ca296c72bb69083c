"""From model outputs to response bytes, per call: the per-item path this change replaced (one dataclass, one id
and one message per item, then SerializeToString) against the batch path (decisions as columns, ids signed per
batch, the response built from the columns): in Python (a message, serialized) and natively (bytes, Rust).

    python -m dwcp_inference.bench.encode [--seconds 0.5] [--rounds 5] [--rpcs all]

Each case's model outputs are computed once and reused, so what is timed is decisions + ids + response bytes. The
paths alternate round by round (a busy moment costs each alike); the median per round is shown."""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import statistics
import struct
import time
from typing import Any, Callable

import numpy as np

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.features import decode_targets, stack_columns
from dwcp_inference.services import convert, decisions, decode, encode
from dwcp_inference.services.prediction_ids import CODECS as ID_CODECS, MODELS as ID_MODELS

from .floor_python import MODELS, _Context, _our_answers
from .requests import BATCH_FORMS, cases, method, request

PATHS = ("per item", "batch, python", "batch, native")
REPLIES = {"PredictBandwidth": None, "SelectCompression": encode.CompressionReply,
           "DetectAnomaly": encode.AnomalyReply, "DetectHighLatency": encode.LatencyReply}


# ------------------------------------------------------------------ the per-item path this change replaced

def _old_sign(key: bytes, model: str, version: str, predictions: list, made_at: int) -> list[str]:
    code, name = ID_MODELS.index(model), version.encode()
    tail = bytes((len(name),)) + name
    nonces = secrets.token_bytes(8 * len(predictions))
    ids = []
    for k, p in enumerate(predictions):
        value = (struct.pack("<f", p) if code == 0 else struct.pack("<Bh", ID_CODECS.index(p[0]), p[1])
                 if code == 1 else struct.pack("<B", bool(p)))
        body = struct.pack("<BBI8s", 1, code, made_at, nonces[8 * k:8 * k + 8]) + tail + value
        mac = hashlib.blake2b(body, key=key, digest_size=16).digest()
        ids.append(base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode())
    return ids


def _old_bandwidth(rt, columns, single, key, base):
    x, out = rt.infer(columns)
    rt.check_finite(out)
    pred = decode_targets(rt.meta.targets, next(iter(out.values())))
    rt.check_finite(pred)
    d = rt.meta.decision
    bw = np.asarray(columns["bandwidth_mbps"], dtype=np.float64)
    mean = np.add.reduce(bw, axis=1) / bw.shape[1]
    cv = np.sqrt(np.maximum(np.add.reduce(bw * bw, axis=1) / bw.shape[1] - mean * mean, 0.0)) / np.maximum(mean, 1e-9)
    conf = np.clip((1.0 - min(float(d.get("validation_mape_pct", 0.0)) / 100.0, 1.0)) / (1.0 + cv), 0.0, 1.0).tolist()
    horizon = float(d.get("interval_seconds", 300.0))
    cols = [np.asarray(pred[n], dtype=np.float64).tolist()
            for n in ("bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms")]
    answers = [decisions.BandwidthAnswer(b, la, lo, j, c, horizon) for b, la, lo, j, c in zip(*cols, conf)]
    now = time.time()
    ids = _old_sign(key, rt.name, rt.version, [a.bandwidth_mbps for a in answers], int(now))
    preds = [pb.BandwidthPrediction(
        predicted_bandwidth_mbps=a.bandwidth_mbps, predicted_latency_ms=a.latency_ms, predicted_packet_loss=a.packet_loss,
        predicted_jitter_ms=a.jitter_ms, confidence=a.confidence, valid_until=convert.timestamp(base + a.horizon_seconds),
        prediction_time=convert.timestamp(now), prediction_id=pid) for a, pid in zip(answers, ids)]
    return preds


def _old_compression(rt, columns, single, key, base):
    _, out = rt.infer(columns)
    name, probs = next(iter(out.items()))
    rt.check_finite({name: probs})
    choices = rt.meta.decision["choices"]
    answers = []
    for row in probs:
        order = np.argsort(-row, kind="stable")
        answers.append([(choices[k]["codec"], int(choices[k]["level"]), float(row[k])) for k in order])
    ids = _old_sign(key, rt.name, rt.version, [a[0][:2] for a in answers], int(time.time()))
    out = []
    for a, pid in zip(answers, ids):
        scores = [pb.CompressionChoice(codec=convert.CODECS[c], level=lv, score=p) for c, lv, p in a]
        out.append(pb.CompressionDecision(choice=scores[0], scores=scores, prediction_id=pid))
    return out


def _old_anomaly(rt, columns, single, key, base, top=3):
    x, out = rt.infer(columns)
    d = rt.meta.decision
    scores = np.asarray(out[d["score_output"]], dtype=np.float64)
    rt.check_finite({d["score_output"]: scores})
    scores = d["score_sign"] * (scores[:, d["score_column"]] if scores.ndim == 2 else scores)
    names, mean, std, index = rt.constants("anomaly", lambda: decisions._normal_stats(rt))
    raw = stack_columns([columns[n] if n in columns and np.ndim(columns[n]) == 1 else x[:, index[n]] for n in names])
    dev = (raw - mean) / std
    order = np.argsort(-np.abs(dev), axis=1, kind="stable")[:, :top].tolist()
    threshold, critical = float(d["threshold"]), float(d["critical_threshold"])
    answers = []
    for s, row, r, dv in zip(scores.tolist(), order, raw.tolist(), dev.tolist()):
        flagged = s >= threshold
        severity = "critical" if s >= critical else "warning" if flagged else "info"
        answers.append((flagged, s, severity, [(names[k], r[k], float(mean[k]), dv[k]) for k in row]))
    ids = _old_sign(key, rt.name, rt.version, [a[0] for a in answers], int(time.time()))
    return [pb.AnomalyVerdict(is_anomaly=f, score=s, threshold=threshold, severity=convert.SEVERITIES[sev],
                              contributions=[pb.FeatureContribution(feature=n, value=v, expected=m, deviation=dd)
                                             for n, v, m, dd in c], prediction_id=pid)
            for (f, s, sev, c), pid in zip(answers, ids)]


def _old_latency(rt, columns, single, key, base):
    x, out = rt.infer(columns)
    d = rt.meta.decision
    scores, errors = out[d["score_output"]], out[d["errors_output"]]
    rt.check_finite({"score": scores, "feature_errors": errors})
    names = rt.meta.feature_names
    answers = []
    for s, errs in zip(scores, errors):
        order = np.argsort(-errs, kind="stable")
        answers.append((bool(s >= d["threshold"]), float(s), [(names[k], float(errs[k])) for k in order]))
    ids = _old_sign(key, rt.name, rt.version, [a[0] for a in answers], int(time.time()))
    return [pb.LatencyVerdict(is_high_latency=f, reconstruction_error=e, threshold=float(d["threshold"]),
                              feature_errors=[pb.FeatureError(feature=n, error=v) for n, v in fe], prediction_id=pid)
            for (f, e, fe), pid in zip(answers, ids)]


OLD = {"PredictBandwidth": (_old_bandwidth, "prediction", "predictions"),
       "SelectCompression": (_old_compression, "decision", "decisions"),
       "DetectAnomaly": (_old_anomaly, "verdict", "verdicts"),
       "DetectHighLatency": (_old_latency, "verdict", "verdicts")}
DECIDE = {"PredictBandwidth": decisions.bandwidth, "SelectCompression": decisions.compression,
          "DetectAnomaly": decisions.anomaly, "DetectHighLatency": decisions.high_latency}


def paths(servicer: Any, case: str, batch: int, native: Any) -> dict[str, Callable[[], bytes]]:
    """Each path, from the case's model outputs to its response bytes."""
    rpc, single = method(case), batch == 1
    rt = servicer.repo.get(MODELS[rpc])
    seen: dict[str, Any] = {}
    infer = rt.infer

    def capture(columns: Any) -> Any:
        seen["columns"] = columns
        return infer(columns)

    batcher, rt.batcher = rt.batcher, None
    rt.infer = capture
    try:
        getattr(servicer, rpc if single else BATCH_FORMS[rpc])(request(case, batch), _Context())
    finally:
        del rt.infer
        rt.batcher = batcher
    columns, outputs = seen["columns"], infer(seen["columns"])
    fixed = type("Outputs", (), {})()  # the version with its outputs computed: only the decisions run
    fixed.__dict__.update(rt.__dict__)
    fixed.__class__ = type(rt)
    fixed.infer = lambda _columns: outputs
    key, sign = servicer.outcomes.signer._key, servicer.outcomes.remember_many
    old, field, fields = OLD[rpc]
    cls = getattr(pb, (rpc if single else BATCH_FORMS[rpc]) + "Response")
    ref = lambda: pb.ModelRef(name=rt.name, version=rt.version)  # noqa: E731
    base = np.full(batch, time.time())

    def per_item() -> bytes:
        items = old(fixed, columns, single, key, float(base[0]))
        return (cls(**{field: items[0]}, model=ref()) if single else cls(**{fields: items}, model=ref())
                ).SerializeToString()

    def reply() -> encode.Reply:
        answers = DECIDE[rpc](fixed, columns)
        if rpc == "PredictBandwidth":
            return encode.bandwidth(fixed, single, answers, base, time.time())
        return REPLIES[rpc](fixed, single, answers=answers)

    return {"per item": per_item,
            "batch, python": lambda: reply().render(sign).SerializeToString(),
            "batch, native": lambda: reply().render(sign, native)}


def per_call(fn: Callable[[], Any], seconds: float) -> float:
    n, started = 0, time.perf_counter()
    while True:
        for _ in range(20):
            fn()
        n += 20
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed / n


def run(names: list[str], seconds: float, rounds: int) -> list[dict[str, Any]]:
    native = decode.choose("native").module
    servicer = _our_answers()
    rows = []
    for case in names:
        for batch in (1, 64):
            fns = paths(servicer, case, batch, native)
            same = {p: fns[p]() for p in fns}
            assert len({len(b) for b in same.values()}) == 1, f"{case}: the paths answer different sizes"
            times: dict[str, list[float]] = {p: [] for p in fns}
            for _ in range(rounds):
                for p, fn in fns.items():
                    times[p].append(per_call(fn, seconds))
            rows.append({"case": case, "batch": batch, "bytes": len(same["batch, native"]),
                         **{p: statistics.median(t) for p, t in times.items()}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per path, case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rpcs", default="all", help="comma-separated cases, or all")
    args = parser.parse_args()
    names = [c for c in cases(args.rpcs) if c != "SelectCompression/sample"]  # the answer does not depend on it
    print(f"{'case':28} {'batch':>5} {'bytes':>6} " + " ".join(f"{p + ' µs':>16}" for p in PATHS)
          + f" {'per item/native':>16}")
    for r in run(names, args.seconds, args.rounds):
        print(f"{r['case']:28} {r['batch']:5d} {r['bytes']:6d} "
              + " ".join(f"{r[p] * 1e6:16.1f}" for p in PATHS) + f" {r['per item'] / r['batch, native']:15.1f}x")


if __name__ == "__main__":
    main()
