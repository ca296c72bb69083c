"""Decisions as columns (services/decisions.py) answer what the per-item rules they replaced answered: the same
response, byte for byte once ids and times are cleared, from the same model outputs, for every RPC, single and a
batch of 64 (the per-item path is kept in bench/encode.py to measure against)."""

from __future__ import annotations

import numpy as np
import pytest

from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.bench import encode as bench
from dwcp_inference.bench.floor_python import _our_answers
from dwcp_inference.bench.requests import BATCH_FORMS, cases, method
from dwcp_inference.services import decisions, decode

from .test_native import _normalized


@pytest.fixture(scope="module")
def servicer():
    return _our_answers()


@pytest.mark.parametrize("batch", (1, 64))
@pytest.mark.parametrize("case", [c for c in cases("all") if c != "SelectCompression/sample"])
def test_batch_decisions_answer_as_the_per_item_rules(servicer, case, batch):
    module = decode.native_module()
    paths = bench.paths(servicer, case, batch, module)
    rpc = method(case) if batch == 1 else BATCH_FORMS[method(case)]
    old = _normalized(paths["per item"](), rpc)
    assert _normalized(paths["batch, python"](), rpc) == old
    if module is not None:  # test_native fails when the extension should be there and is not
        assert _normalized(paths["batch, native"](), rpc) == old
    assert len(getattr(pb, rpc + "Response").FromString(old).ListFields()[0][1] if batch > 1 else [1]) == batch


def test_an_answer_object_gives_each_item_in_the_per_item_form():
    values = np.array([1.0, 2.0])
    answers = decisions.BandwidthAnswers(values, values, values, values, values, 300.0)
    assert answers[-1] == decisions.BandwidthAnswer(2.0, 2.0, 2.0, 2.0, 2.0, 300.0)
    assert [a.bandwidth_mbps for a in answers] == [1.0, 2.0]
    with pytest.raises(IndexError):
        answers[2]
    ranked = decisions.CompressionAnswers(np.array([[1, 0]]), np.array([[0.75, 0.25]]), ["lz4", "zstd"], [1, 3])
    assert ranked[0].ranked == [("zstd", 3, 0.75), ("lz4", 1, 0.25)]
    assert decisions.SEVERITY_CODES == {"info": pb.SEVERITY_INFO, "warning": pb.SEVERITY_WARNING,
                                        "critical": pb.SEVERITY_CRITICAL}


def _targets():
    """The bundled bandwidth version's targets, and one of each transform with and without a range."""
    from dwcp_inference.features import Target
    from dwcp_inference.services.settings import bundled_models
    from dwcp_inference import metadata

    bundled = metadata.read(next((bundled_models() / "bandwidth_predictor").iterdir())).targets
    made = [Target("a", "log1p", 1.5, 0.7, 0.0, None), Target("b", "log", -3.0, 2.0, 0.0, 1.0),
            Target("c", "identity", 10.0, 4.0, None, None), Target("d", "identity", 0.0, 1.0, -2.0, 2.0)]
    return [bundled, made]


@pytest.mark.parametrize("which", (0, 1))
def test_the_target_decoder_gives_decode_targets_bits(which):
    """decisions.TargetDecoder (a few array operations for all targets) against features.decode_targets (the
    reference, per target), bit for bit, over random outputs with NaN, +-0, infinities and overflowing values."""
    from dwcp_inference.features import decode_targets

    targets = _targets()[which]
    decoder = decisions.TargetDecoder(targets)
    rng = np.random.default_rng(17)
    special = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1e30, -1e30, 700.0, -700.0, 3.4e38, 2.0, -2.0],
                       dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for batch in (1, 2, 5, 64):
            for _ in range(100):
                outputs = (rng.standard_normal((batch, len(targets))) * rng.choice([1, 10, 100])).astype(np.float32)
                mask = rng.random(outputs.shape) < 0.15
                outputs[mask] = rng.choice(special, int(mask.sum()))
                want, got = decode_targets(targets, outputs), decoder(outputs)
                assert [want[t.name].tobytes() for t in targets] == [row.tobytes() for row in got]


def test_a_target_that_decodes_to_infinity_fails_the_call_naming_it(servicer):
    """The fast decoding finds the non-finite value; the call fails with the reference's message (its items and
    targets)."""
    from dwcp_inference.services.errors import NonFiniteOutput

    rt = servicer.repo.get("bandwidth_predictor")
    outputs = np.zeros((3, len(rt.meta.targets)), dtype=np.float32)
    outputs[1, 0] = 3e38  # finite as the model answers it, infinite in Mbps
    given = {rt.meta.outputs[0].name: outputs}
    rt.infer = lambda columns: (np.zeros((3, 1)), given)  # the model is not run: its outputs are given
    try:
        with pytest.raises(NonFiniteOutput) as e, np.errstate(over="ignore"):
            decisions.bandwidth(rt, {"bandwidth_mbps": np.full((3, rt.meta.window), 100.0)})
    finally:
        del rt.infer  # the class's method again
    assert str(e.value) == (f"bandwidth_predictor v{rt.version}: the model gave a non-finite output "
                            "(bandwidth_mbps) for item(s) 1 of this call; no answer is given")


def test_the_runtimes_feed_gives_a_categorical_column_the_indices_raw_inputs_gives():
    """runtime.feed_plan's dict lookup (small columns) and raw_inputs.category_indices agree, unknown words -1."""
    from dwcp_inference.raw_inputs import category_indices, graph_feed_plan
    from dwcp_inference.services.runtime import feed_plan

    servicer = _our_answers()
    meta = servicer.repo.get("consensus_latency").meta
    labelled = [f for f in meta.raw_fields if f.vocabulary]
    assert labelled  # the bundled consensus version reads categorical fields
    ours, reference = dict(feed_plan(meta)), dict(graph_feed_plan(meta))
    rng = np.random.default_rng(9)
    for f in labelled:
        words = np.array(list(f.vocabulary) + ["", "unknown"])
        for shape in [(1,), (1, 20), (3, 20), (64, 20)]:
            column = rng.choice(words, shape)
            got = ours[f.name](column)
            assert got.dtype == np.int64 and np.array_equal(got, reference[f.name](column))
            assert np.array_equal(got, category_indices(column, f.vocabulary))


def test_the_one_item_anomaly_rule_gives_the_batch_rules_bits():
    """decisions.anomaly_one (Python floats, one item) against anomaly_columns (numpy, the reference): every
    column's bytes and dtype, over random values with ties, +-0, huge values, integer statistics and a zero std
    (which anomaly_one leaves to the reference)."""
    rng = np.random.default_rng(21)
    names = [f"f{k}" for k in range(6)]
    pool = [0.0, -0.0, 1.0, -1.0, 2.5, 1e300, -1e300, 3.0]
    declined = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(3000):
            values = [float(v) for v in rng.choice(pool, 6)] if rng.random() < 0.3 else \
                (rng.standard_normal(6) * 10 ** rng.uniform(-3, 3)).tolist()
            raw = [np.array([v]) for v in values]
            mean = rng.integers(-3, 4, 6) if rng.random() < 0.3 else rng.standard_normal(6)
            std = rng.choice([0.0, 0.5, 1.0, 2.0, 1e-300], 6) if rng.random() < 0.2 else rng.uniform(0.1, 3, 6)
            scores = np.array([rng.choice([0.2, 0.5, 0.7, 0.9, float(rng.random())])])
            threshold, critical, top = 0.5, 0.9, int(rng.choice([1, 3, 8]))
            want = decisions.anomaly_columns(scores, raw, names, mean, std, threshold, critical, top)
            got = decisions.anomaly_one(scores, raw, names, mean, std, threshold, critical, top)
            if got is None:
                declined += 1
                assert not (np.all(std) and np.all(np.isfinite((np.array(values) - mean) / std)))
                continue
            for field in ("is_anomaly", "score", "severity", "feature", "value", "expected", "deviation"):
                w, g = getattr(want, field), getattr(got, field)
                assert (w.dtype, w.shape, w.tobytes()) == (g.dtype, g.shape, g.tobytes()), field
            assert (got.threshold, got.names) == (want.threshold, want.names)
    assert 0 < declined < 3000


def test_one_row_is_ranked_as_numpys_stable_argsort_ranks_it():
    """decisions.ranked_descending's Python sort of one row against np.argsort(-row, kind="stable") and the
    values taken along it, in float32 and float64, with ties, +-0 and infinities."""
    rng = np.random.default_rng(33)
    pool = [0.0, -0.0, 0.25, 0.5, 1.0, np.inf, -np.inf, 1e-40]
    for dtype in (np.float32, np.float64):
        for _ in range(2000):
            k = int(rng.integers(0, 12))
            row = (rng.choice(pool, (1, k)) if rng.random() < 0.5 else rng.random((1, k))).astype(dtype)
            order, ranked = decisions.ranked_descending(row)
            want = np.argsort(-row, axis=1, kind="stable")
            assert (order.dtype, order.shape, order.tobytes()) == (want.dtype, want.shape, want.tobytes())
            taken = np.ascontiguousarray(row[np.arange(1)[:, None], want], dtype=np.float64)
            assert (ranked.dtype, ranked.shape, ranked.tobytes()) == (taken.dtype, taken.shape, taken.tobytes())


def test_one_windows_confidence_has_the_batch_rules_bits():
    """decisions.confidence_one (Python floats after numpy's sums) against confidence_columns (numpy, the
    reference): the same bytes over random windows with +-0, NaN, infinities, huge and tiny values, and bases at
    and beyond the clip's bounds."""
    rng = np.random.default_rng(17)
    pool = [0.0, -0.0, 1.0, 1e-12, 1e-300, 1e300, np.inf, np.nan, 500.0, 3.0]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(3000):
            width = int(rng.integers(1, 40))
            bw = (rng.choice(pool, (1, width)) if rng.random() < 0.4 else
                  rng.random((1, width)) * 10 ** rng.uniform(-6, 6)).astype(np.float64)
            base = float(rng.choice([0.0, -0.0, 0.5, 0.935, 1.0, 2.0, -1.0, np.nan]))
            want, got = decisions.confidence_columns(base, bw), decisions.confidence_one(base, bw)
            assert (got.dtype, got.shape, got.tobytes()) == (want.dtype, want.shape, want.tobytes()), (base, bw)
