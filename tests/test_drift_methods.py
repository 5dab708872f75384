"""The offline drift methods (ks, chi2, tabular): the built-in backend against alibi-detect and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from drift_detector.detector import FeatureSpec, fit
from driftdata import CAT, NUM, categorical_data, numeric_data
from scipy import stats as st


def _assert_same(builtin, alibi):
    """Statistics and p-values within 1e-6. alibi-detect stores them as float32, so a large Chi²
    statistic (hundreds) is compared relative to its size, at 1e-6 too."""
    assert builtin.drift == alibi.drift
    for name, p in builtin.feature_p_values.items():
        assert abs(p - alibi.feature_p_values[name]) <= 1e-6, name
        s, s_ref = builtin.feature_statistics[name], alibi.feature_statistics[name]
        assert abs(s - s_ref) <= 1e-6 * max(1.0, abs(s_ref)), name
    assert builtin.threshold == pytest.approx(alibi.threshold, abs=1e-12)
    assert abs(builtin.p_value - alibi.p_value) <= 1e-6


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
@pytest.mark.parametrize("shift", [0.0, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_parity_with_alibi(seed, shift, correction):
    ref, win = numeric_data(seed, shift)
    b = fit(ref, NUM, "ks", p_value=0.05, correction=correction).score(win)
    a = fit(ref, NUM, "ks", p_value=0.05, correction=correction, backend="alibi").score(win)
    _assert_same(b, a)
    if shift:
        assert b.drift
    for j, f in enumerate(NUM):  # and the float64 values equal scipy's to rounding
        ks = st.ks_2samp(ref[:, j], win[:, j], method="asymp")
        assert b.feature_statistics[f.name] == pytest.approx(ks.statistic, abs=1e-12)
        assert b.feature_p_values[f.name] == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("discrete", [False, True])
def test_ks_values_are_scipys_whether_or_not_the_p_value_is_remembered(discrete):
    """Continuous data (no value shared with the reference: one search per feature) and discrete data
    (shared values: a second search); the memoised p-values are the ones scipy computes."""
    from drift_detector.methods import ks as det_module

    rng = np.random.default_rng(11)
    ref, win = rng.normal(size=(2000, 3)), rng.normal(0.1, 1.0, size=(500, 3))
    if discrete:
        ref, win = np.round(ref * 3), np.round(win * 3)
    detector = fit(ref, NUM[:3], "ks")
    det_module._KS_SF_CACHE.clear()
    first = detector.score(win)
    assert det_module._KS_SF_CACHE  # remembered
    again = detector.score(win)
    for j, f in enumerate(NUM[:3]):
        ks = st.ks_2samp(ref[:, j], win[:, j], method="asymp")
        assert first.feature_statistics[f.name] == pytest.approx(ks.statistic, abs=1e-12)
        assert first.feature_p_values[f.name] == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-15)
        assert again.feature_p_values[f.name] == first.feature_p_values[f.name]


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chi2_parity_with_alibi(seed, shift, correction):
    ref, win = categorical_data(seed, shift)
    b = fit(ref, CAT, "chi2", p_value=0.05, correction=correction).score(win)
    a = fit(ref, CAT, "chi2", p_value=0.05, correction=correction, backend="alibi").score(win)
    _assert_same(b, a)
    if shift:
        assert b.drift
    for j, f in enumerate(CAT):
        cats = np.union1d(ref[:, j], win[:, j])
        table = np.array([[np.sum(ref[:, j] == c) for c in cats], [np.sum(win[:, j] == c) for c in cats]])
        chi2, p, _, _ = st.chi2_contingency(table)
        assert b.feature_statistics[f.name] == pytest.approx(chi2, rel=1e-9, abs=1e-12)
        assert b.feature_p_values[f.name] == pytest.approx(p, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
@pytest.mark.parametrize("shift", [0.0, 0.3])
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_tabular_parity_with_alibi(seed, shift, correction):
    ref_n, win_n = numeric_data(seed, shift)
    ref_c, win_c = categorical_data(seed, bool(shift))
    ref, win = np.hstack([ref_n, ref_c]), np.hstack([win_n, win_c])
    b = fit(ref, NUM + CAT, "tabular", p_value=0.05, correction=correction).score(win)
    a = fit(ref, NUM + CAT, "tabular", p_value=0.05, correction=correction, backend="alibi").score(win)
    _assert_same(b, a)


@pytest.mark.parametrize(
    ("method", "features", "make"),
    [
        ("ks", NUM, lambda rng, n: rng.normal(size=(n, 4))),
        ("chi2", CAT, lambda rng, n: np.stack([rng.integers(0, 5, n), rng.integers(0, 2, n), rng.integers(0, 4, n)], 1)),
    ],
)
@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_false_positive_rate_within_p_value(method, features, make, correction):
    """Same-distribution windows alarm at most at the configured rate (plus binomial noise)."""
    rng = np.random.default_rng(42)
    p_value, windows = 0.05, 400
    det = fit(make(rng, 5000).astype(float), features, method, p_value=p_value, correction=correction, window=250)
    alarms = sum(det.score(make(rng, 250).astype(float)).drift for _ in range(windows))
    bound = p_value * windows + 3 * math.sqrt(windows * p_value * (1 - p_value))
    print(f"{method}/{correction}: {alarms} alarms in {windows} null windows (bound {bound:.0f})")
    assert alarms <= bound


def test_shifted_window_is_detected_with_details():
    rng = np.random.default_rng(7)
    det = fit(rng.normal(size=(5000, 4)), NUM, "ks", p_value=0.01, window=1000)
    win = rng.normal(size=(1000, 4))
    win[:, 2] += 0.3
    result = det.score(win)
    assert result.drift
    assert result.p_value == result.feature_p_values["x2"] < result.threshold == 0.01 / 4
    assert result.statistic == result.feature_statistics["x2"]
    assert not det.score(rng.normal(size=(1000, 4))).drift


def test_bad_configurations_are_refused():
    ref = np.zeros((10, 1))
    with pytest.raises(ValueError, match="numeric features only"):
        fit(ref, [FeatureSpec("c", "categorical", ["a"])], "ks")
    with pytest.raises(ValueError, match="categorical features only"):
        fit(ref, [FeatureSpec("x", "numeric")], "chi2")
    with pytest.raises(ValueError, match="unknown method"):
        fit(ref, [FeatureSpec("x", "numeric")], "mmd")
    det = fit(np.random.default_rng(0).normal(size=(10, 1)), [FeatureSpec("x", "numeric")], "ks")
    with pytest.raises(ValueError, match="window must be"):
        det.score(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        det.score(np.array([[np.nan]]))
