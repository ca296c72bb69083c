"""The feature layer: validation names the bad value, transforms are what the metadata says."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwcp_inference.features import (Feature, FeatureError, RawField, Target, byte_entropy, decode_targets,
                                     encode_targets, fit_scaling, sample_ratio, transform, validate_raw)

FIELDS = [RawField("bw", 0.0, 1e7), RawField("kind", vocabulary=("a", "b"))]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=30))
def test_validate_accepts_exactly_the_finite_values_in_range(values):
    cols = {"bw": np.array(values), "kind": np.array(["a"] * len(values))}
    ok = all(math.isfinite(v) and 0 <= v <= 1e7 for v in values)
    if ok:
        validate_raw(FIELDS, cols)
    else:
        with pytest.raises(FeatureError) as e:
            validate_raw(FIELDS, cols)
        assert e.value.field == "bw"
        bad = values[e.value.index[0]]
        assert not (math.isfinite(bad) and 0 <= bad <= 1e7)
        assert all(math.isfinite(v) and 0 <= v <= 1e7 for v in values[: e.value.index[0]])


@given(st.lists(st.text(max_size=3), min_size=1, max_size=10))
def test_unknown_categories_are_refused_with_the_vocabulary(words):
    cols = {"bw": np.zeros(len(words)), "kind": np.array(words, dtype=object).astype(str)}
    if set(words) <= {"a", "b"}:
        validate_raw(FIELDS, cols)
    else:
        with pytest.raises(FeatureError, match=r"expected one of \['a', 'b'\]"):
            validate_raw(FIELDS, cols)


@settings(max_examples=50)
@given(st.integers(1, 5), st.integers(1, 7))
def test_transform_keeps_the_column_shape_and_adds_the_feature_axis(n, w):
    feats = [Feature("x", "bw", "log1p", mean=1.0, std=2.0), Feature("k", "kind", "one_hot", vocabulary=("a", "b"))]
    cols = {"bw": np.full((n, w), 3.0), "kind": np.full((n, w), "b")}
    x = transform(feats, cols)
    assert x.shape == (n, w, 3) and x.dtype == np.float32
    assert np.allclose(x[..., 0], (np.log1p(3.0) - 1.0) / 2.0)
    assert np.all(x[..., 1] == 0) and np.all(x[..., 2] == 1)


def test_cyclic_features_put_midnight_next_to_23h():
    f = [Feature("s", "h", "sin", period=24), Feature("c", "h", "cos", period=24)]
    x = transform(f, {"h": np.array([0.0, 23.0, 12.0])})
    assert np.linalg.norm(x[0] - x[1]) < 0.3 < np.linalg.norm(x[0] - x[2])


def test_fit_scaling_standardises_training_data():
    rng = np.random.default_rng(0)
    cols = {"bw": rng.lognormal(5, 1, 1000)}
    fitted = fit_scaling([Feature("x", "bw", "log1p")], cols)
    x = transform(fitted, cols)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


@given(st.lists(st.floats(0, 1e5), min_size=1, max_size=20))
def test_targets_round_trip(values):
    t = [Target("y", "log1p", mean=2.0, std=3.0, min=0.0)]
    y = np.array(values)
    back = decode_targets(t, encode_targets(t, {"y": y}))["y"]
    assert np.allclose(back, y, rtol=1e-4, atol=1e-3)


def test_payload_traits_tell_noise_from_text():
    noise = np.random.default_rng(0).bytes(4096)
    text = b"the quick brown fox jumps over the lazy dog " * 100
    assert byte_entropy(noise) > 7.9 and byte_entropy(text) < 4.5
    assert sample_ratio(noise) > 0.99 and sample_ratio(text) < 0.1
    assert byte_entropy(b"") == 0.0 and sample_ratio(b"") == 1.0


def test_history_transforms_judge_the_current_value_against_its_own_past():
    past = [10.0, 12.0, 8.0, 10.0, 10.0, 12.0, 8.0]  # mean 10, std 1.5119
    col = np.array([past + [16.0], [v * 1000 for v in past] + [16000.0]])  # the same series in other units
    feats = [Feature(k, "v", k) for k in ("history_z", "history_robust_z", "history_short_z", "history_diff_z")]
    x = transform(feats, {"v": col})
    assert x.shape == (2, 4)
    assert x[0] == pytest.approx(x[1], rel=1e-5)  # independent of units and level
    assert x[0, 0] == pytest.approx((16 - 10) / np.std(past), rel=1e-5)
    assert x[0, 1] == pytest.approx((16 - 10) / (1.4826 * 2), rel=1e-5)  # median 10, MAD 2
    short_ref = past[:-2]
    assert x[0, 2] == pytest.approx((np.mean([12, 8, 16]) - np.mean(short_ref)) / np.std(short_ref), rel=1e-5)
    assert x[0, 3] == pytest.approx((16 - 8) / np.std(np.diff(past)), rel=1e-5)
    flat = transform(feats[:1], {"v": np.array([[5.0] * 8 + [5.0], [5.0] * 8 + [1e9]])})
    assert flat[0, 0] == 0 and flat[1, 0] == 50  # a flat past: 1% of its level as the spread, then clipped


def test_context_z_scales_a_window_by_the_steps_before_it():
    f = Feature("v", "v", "context_z", context=4)
    assert Feature.from_dict(f.to_dict()) == f
    x = transform([f], {"v": np.array([[1.0, 3.0, 1.0, 3.0, 2.0, 4.0]])})
    assert x.shape == (1, 2, 1)
    assert x[0, :, 0] == pytest.approx([0.0, 2.0])
    with pytest.raises(ValueError, match="context of at least 2"):
        Feature.from_dict({"name": "v", "source": "v", "transform": "context_z"})


def test_the_prepared_pipeline_gives_what_the_functions_give():
    from dwcp_inference.features import Pipeline

    rng = np.random.default_rng(3)
    raw = [RawField("bw", 0.0, 1e7), RawField("loss", 0.0, 1.0), RawField("tod", 0.0, 24.0),
           RawField("kind", vocabulary=("a", "b"))]
    feats = [Feature("bw", "bw", "log1p", mean=5.0, std=2.0), Feature("loss", "loss", "log", mean=-6, std=3),
             Feature("kind", "kind", "one_hot", vocabulary=("a", "b")), Feature("s", "tod", "sin", period=24),
             Feature("c", "tod", "cos", period=24, mean=0.1, std=0.7), Feature("raw", "bw")]
    p = Pipeline(raw, feats)
    for shape in [(7,), (5, 24)]:
        cols = {"bw": rng.uniform(0, 1e4, shape), "loss": rng.uniform(0, 0.1, shape),
                "tod": rng.uniform(0, 24, shape), "kind": rng.choice(["a", "b"], shape)}
        p.validate(cols)
        assert np.array_equal(p.transform(cols), transform(feats, cols))
        cols["loss"][(0,) * len(shape)] = float("nan")
        with pytest.raises(FeatureError) as e:
            p.validate(cols)
        assert e.value.field == "loss" and e.value.index == (0,) * len(shape)
    with pytest.raises(FeatureError, match="kind: unknown value 'z'"):
        p.validate({"bw": np.ones(2), "loss": np.zeros(2), "tod": np.ones(2), "kind": np.array(["a", "z"])})
    with pytest.raises(FeatureError, match="bw: missing"):
        p.validate({"loss": np.zeros(2), "tod": np.ones(2), "kind": np.array(["a", "b"])})


def test_the_pipeline_refuses_unknown_labels_with_validate_raws_message():
    """The pipeline's set test of categorical columns accepts what np.isin accepts and, on any unknown, missing or
    odd column, gives validate_raw's message and index."""
    from dwcp_inference.features import Pipeline

    raw = [RawField("x", 0.0, 1.0), RawField("tier", vocabulary=("tier1", "tier2")),
           RawField("mode", vocabulary=("a", "b", "c"))]
    p = Pipeline(raw, [Feature("x", "x")])
    rng = np.random.default_rng(5)
    words = np.array(["tier1", "tier2", "a", "b", "c", "", "tier1 ", "z"])
    for shape in [(1,), (4,), (2, 20)]:
        for _ in range(200):
            cols = {"x": rng.uniform(0, 1, shape), "tier": rng.choice(words[:2], shape),
                    "mode": rng.choice(words[2:5], shape)}
            for name in ("tier", "mode"):
                if rng.random() < 0.4:
                    flat = cols[name].reshape(-1)
                    flat[rng.integers(flat.size)] = rng.choice(words)
            try:
                validate_raw(raw, cols)
                want = None
            except FeatureError as e:
                want = (str(e), e.index)
            try:
                p.validate(cols)
                got = None
            except FeatureError as e:
                got = (str(e), e.index)
            assert got == want
    for odd in (np.array([1, 2]), np.array([b"tier1", b"tier2"]), np.array(["tier1", None], dtype=object)):
        with pytest.raises(FeatureError, match="tier: unknown value"):
            p.validate({"x": np.zeros(2), "tier": odd, "mode": np.array(["a", "a"])})
    with pytest.raises(FeatureError, match="mode: missing"):
        p.validate({"x": np.zeros(2), "tier": np.array(["tier1", "tier2"])})
