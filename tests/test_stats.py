import numpy as np
import pytest
from scipy import stats

from lib.stats import bootstrap_interval, holm, mean_interval, welch_t, wilson_interval


def test_wilson_interval_at_known_values():
    # 8 of 10, 95%: (0.4902, 0.9433) (Newcombe 1998, Table I, and any calculator)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # 0 of 10: lower bound exactly 0, upper 0.2775 (z^2 / (n + z^2))
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(1.959964 ** 2 / (10 + 1.959964 ** 2), rel=1e-6)
    # arrays broadcast, and the interval contains p and shrinks with n
    lows, highs = wilson_interval(np.array([50, 500]), np.array([100, 1000]))
    assert np.all(lows < 0.5) and np.all(highs > 0.5) and highs[1] - lows[1] < highs[0] - lows[0]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_welch_t_matches_scipy():
    a = [2.1, 2.9, 3.4, 2.2, 3.8]
    b = [4.0, 5.1, 3.6, 6.2]
    ours = welch_t(a, b)
    theirs = stats.ttest_ind(a, b, equal_var=False)
    assert ours.t == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours.p == pytest.approx(theirs.pvalue, rel=1e-10)
    assert ours.df == pytest.approx(theirs.df, rel=1e-12)
    ci = theirs.confidence_interval(0.95)
    assert (ours.low, ours.high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    with pytest.raises(ValueError):
        welch_t([1.0], [2.0, 3.0])


def test_mean_interval_is_the_student_t_interval():
    x = np.array([[1.0, 10.0], [2.0, 10.0], [4.0, 10.0]])  # 3 seeds, 2 points
    mean, low, high = mean_interval(x)
    ref = stats.t.interval(0.95, 2, loc=x[:, 0].mean(), scale=stats.sem(x[:, 0]))
    assert (low[0], high[0]) == pytest.approx(ref)
    assert mean[1] == low[1] == high[1] == 10.0  # no spread, no width


def test_bootstrap_interval_covers_the_mean_and_is_reproducible():
    x = np.random.default_rng(1).normal(3.0, 1.0, size=200)
    low, high = bootstrap_interval(x, resamples=2000)
    assert low < x.mean() < high and high - low < 0.5
    assert bootstrap_interval(x, resamples=2000) == (low, high)


def test_holm_adjustment_by_hand_and_its_properties():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    rng = np.random.default_rng(0)
    for _ in range(100):
        p = rng.uniform(0, 1, size=rng.integers(1, 12))
        adjusted = holm(p)
        assert np.all(adjusted >= p) and np.all(adjusted <= 1)
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(adjusted[order]) >= 0)  # monotone in p
        assert np.isclose(adjusted[order[0]], min(1.0, len(p) * p.min()))  # Bonferroni for the smallest


def test_holm_over_a_planned_family_counts_missing_tests_as_one():
    p = [0.01, 0.04, 0.03]
    np.testing.assert_allclose(holm(p, family_size=5), holm(p + [1.0, 1.0])[:3])
    np.testing.assert_allclose(holm(p, family_size=3), holm(p))
    rng = np.random.default_rng(2)
    for _ in range(100):  # a test that lands later never raises the others' values
        q = rng.uniform(0, 0.2, size=6)
        before = holm(q[:5], family_size=6)
        assert np.all(holm(q, family_size=6)[:5] <= before + 1e-12)
    with pytest.raises(ValueError, match="family_size=2 is smaller than the 3"):
        holm(p, family_size=2)


def test_welch_on_constant_samples():
    same = welch_t([1.0, 1.0, 1.0], [1.0, 1.0])  # e.g. every seed of both at 100%
    assert (same.p, same.difference, same.low, same.high) == (1.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="constant, at different values"):
        welch_t([1.0, 1.0], [0.5, 0.5])
