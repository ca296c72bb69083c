"""NAB's standard score (training/nab.py), checked against a hand-worked example of nab/sweeper.py's rules, and
NAB's windowed Gaussian baseline against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dwcp_inference.training import nab


def _scaled(y: float) -> float:  # nab/sweeper.py scaledSigmoid, written out
    return -1.0 if y >= 3.0 else 2 / (1 + math.exp(5 * y)) - 1


def test_a_hand_worked_file_scores_as_nab_scores_it():
    # 20 rows: the first floor(0.15 * 20) = 3 are probationary. One window, rows 10..13 (width 4).
    # Detections at row 1 (probationary: ignored), row 11 (in the window, position -(13 - 11 + 1) / 4 = -0.75)
    # and row 18 (5 rows after the window's end: position 5 / (4 - 1)).
    flags = np.zeros(20, bool)
    flags[[1, 11, 18]] = True
    tp = _scaled(-0.75) / _scaled(-1.0)  # A_TP = 1, scaled so that the window's first row scores 1
    fp = 0.11 * _scaled(5 / 3)  # -A_FP * scaledSigmoid: a cost of almost 0.11
    assert tp == pytest.approx(0.96699, abs=1e-5) and fp == pytest.approx(-0.10995, abs=1e-5)
    raw, windows = nab.nab_raw_score(flags, [(10, 13)])
    assert windows == 1 and raw == pytest.approx(tp + fp)
    # Normalised between the null detector (A_FN = -1 per window) and the perfect one (A_TP = 1 per window).
    assert nab.nab_standard_score([(raw, windows)]) == pytest.approx(100 * (tp + fp + 1) / 2)
    assert nab.nab_standard_score([(raw, windows)]) == pytest.approx(92.852, abs=1e-3)


def test_only_the_earliest_detection_counts_and_a_missed_window_costs_a_fn():
    spans = [(10, 13), (30, 33)]
    early, late = np.zeros(40, bool), np.zeros(40, bool)
    early[[10, 12]] = True  # the window's first row: a full A_TP; row 12 adds nothing
    late[13] = True  # its last row: position -1/4, worth much less
    raw_early, n = nab.nab_raw_score(early, spans)
    assert n == 2 and raw_early == pytest.approx(1.0 + nab.A_FN)  # the second window is missed
    raw_late, _ = nab.nab_raw_score(late, spans)
    assert raw_late == pytest.approx(_scaled(-0.25) / _scaled(-1.0) + nab.A_FN)
    # Null and perfect detectors score 0 and 100.
    perfect = np.zeros(40, bool)
    perfect[[10, 30]] = True
    assert nab.nab_standard_score([nab.nab_raw_score(np.zeros(40, bool), spans)]) == 0.0
    assert nab.nab_standard_score([nab.nab_raw_score(perfect, spans)]) == pytest.approx(100.0)


def test_a_false_positive_far_from_any_window_costs_a_fp():
    flags = np.zeros(40, bool)
    flags[5] = True  # probationary: the first floor(0.15 * 40) = 6 rows are not scored
    assert nab.nab_raw_score(flags, [(30, 33)])[0] == pytest.approx(nab.A_FN)
    flags[[5, 8]] = [False, True]  # row 8: scored, no window before it
    assert nab.nab_raw_score(flags, [(30, 33)])[0] == pytest.approx(nab.A_FN + nab.A_FP)


def test_the_windowed_gaussian_judges_each_value_against_the_values_before_it():
    rng = np.random.default_rng(3)
    v = rng.normal(10, 2, 1500)
    z = nab.windowed_gaussian_z(v)
    for i in (1, 2, 50, 999, 1000, 1001, 1499):
        before = v[max(0, i - nab.GAUSSIAN_WINDOW):i]
        assert z[i] == pytest.approx((v[i] - before.mean()) / max(before.std(), 1e-6), rel=1e-6, abs=1e-6)
    assert z[0] == 0.0
