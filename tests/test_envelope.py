"""Chinchilla Approach 1: the envelope of training curves, against a hand count and a known law."""
import numpy as np
import pytest

from scalelab.science import envelope, scaling


def test_the_envelope_is_the_lowest_curve_at_each_compute_counted_by_hand():
    # Three runs: losses at log-spaced C; between points a curve is linear in log C.
    small = envelope.Curve('small', 1e3, np.array([1e9, 1e10, 1e11]), np.array([3.0, 2.0, 1.8]))
    mid = envelope.Curve('mid', 1e4, np.array([1e9, 1e10, 1e11, 1e12]), np.array([3.5, 2.2, 1.7, 1.5]))
    big = envelope.Curve('big', 1e5, np.array([1e10, 1e11, 1e12]), np.array([3.0, 1.9, 1.4]))
    C = np.array([1e9, 1e10, np.sqrt(1e10 * 1e11), 1e11, np.sqrt(1e11 * 1e12), 1e12, 2e12])
    loss, best = envelope.lowest([small, mid, big], C)
    # by hand: at 1e9 small 3.0 < mid 3.5 (big not started); at 1e10 small 2.0; half a decade on:
    # small 1.9, mid 1.95, big 2.45 -> small; at 1e11 mid 1.7; then mid 1.6 vs big 1.65 -> mid;
    # at 1e12 big 1.4; past every curve's end: none.
    assert loss[:6] == pytest.approx([3.0, 2.0, 1.9, 1.7, 1.6, 1.4])
    assert best[:6].tolist() == [0, 0, 0, 1, 1, 2]
    assert np.isinf(loss[6])
    fit = envelope.fit_envelope([small, mid, big], points=50)
    assert fit.C[0] == pytest.approx(1e11) and fit.C[-1] == pytest.approx(1e12)  # the runs' final budgets
    assert set(fit.run) == {'mid', 'big'}
    assert fit.a + fit.b == pytest.approx(1.0)
    assert np.allclose(fit.D, fit.C / (6 * fit.N))


def test_the_envelope_of_curves_from_a_known_law_recovers_its_allocation():
    """Runs of 17 sizes a quarter decade apart, each 'trained' to 4 budgets, with the loss of a
    Chinchilla law at (N, D seen so far): the envelope's exponent is the law's
    beta / (alpha + beta), within the quarter-decade granularity of the sizes."""
    truth = scaling.Chinchilla(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.28)
    curves = []
    for N in np.geomspace(1e6, 1e10, 17):
        D = np.geomspace(1e7, 1e13, 300)
        curves.append(envelope.Curve(f'N{N:.3g}', N, 6 * N * D, truth.predict(N, D)))
    fit = envelope.fit_envelope(curves, C_range=(1e18, 1e22), points=400)
    assert fit.a == pytest.approx(truth.beta / (truth.alpha + truth.beta), abs=0.02)
    n_opt, _ = truth.optimal_allocation(1e20)
    assert fit.optimal_allocation(1e20)[0] == pytest.approx(n_opt, rel=0.2)
    fits, failed = envelope.bootstrap(curves, n=20, C_range=(1e18, 1e22))
    assert failed == 0 and np.std([f.a for f in fits]) > 0


def test_the_envelope_refuses_what_it_cannot_fit():
    one = envelope.Curve('one', 1e3, np.array([1e9, 1e10]), np.array([3.0, 2.0]))
    with pytest.raises(ValueError, match='at least 2 runs'):
        envelope.fit_envelope([one])
    twin = envelope.Curve('twin', 1e4, np.array([1e9, 1e10]), np.array([3.5, 2.5]))
    with pytest.raises(ValueError, match='the runs end at one budget'):
        envelope.fit_envelope([one, twin])


def test_the_fitted_envelope_keeps_its_grid_losses_and_curves_and_allocates_by_hand():
    small = envelope.Curve('small', 1e3, np.array([1e9, 1e10, 1e11]), np.array([3.0, 2.0, 1.6]))
    big = envelope.Curve('big', 1e5, np.array([1e10, 1e11, 1e12]), np.array([3.0, 1.7, 1.4]))
    fit = envelope.fit_envelope([small, big])
    assert len(fit.C) == 200 and fit.curves == (small, big)
    np.testing.assert_allclose(fit.loss, envelope.lowest([small, big], fit.C)[0])
    C = np.geomspace(1e11, 1e12, 5)
    N_opt, D_opt = fit.optimal_allocation(C)
    np.testing.assert_allclose(6 * N_opt * D_opt, C, rtol=1e-9)   # a + b = 1 and 6 k_N k_D = 1
    hand = envelope.Envelope(C, C, C, (), a=0.5, N_coefficient=2.0, b=0.5, D_coefficient=3.0)
    assert [float(v) for v in hand.optimal_allocation(100)] == [20.0, 30.0]
    assert hand.params() == {'a': 0.5, 'b': 0.5, 'N_coefficient': 2.0, 'D_coefficient': 3.0}
    longer = envelope.Curve('small', 1e3, np.array([1e9, 1e10, 1e12]), np.array([3.0, 2.0, 1.6]))
    stuck = envelope.Curve('stuck', 1e4, np.array([1e9, 1e10]), np.array([9.0, 8.0]))
    with pytest.raises(ValueError, match=r'^envelope: one run size \(1e\+03\) is lowest over the whole range: '
                                         r'no exponent$'):
        envelope.fit_envelope([longer, stuck])


def test_the_bootstrap_resamples_runs_over_the_full_fit_s_grid():
    """Two runs: a resample is both (fits) or one twice (fails: one size), half the time each;
    every refit keeps the full fit's C range and point count; a seed repeats itself."""
    small = envelope.Curve('small', 1e3, np.array([1e9, 1e10, 1e11]), np.array([3.0, 2.0, 1.6]))
    big = envelope.Curve('big', 1e5, np.array([1e10, 1e11, 1e12]), np.array([3.0, 1.7, 1.4]))
    full = envelope.fit_envelope([small, big], points=30)
    fits, failed = envelope.bootstrap([small, big], n=60, seed=3, points=30)
    assert len(fits) + failed == 60 and 15 <= failed <= 45
    for refit in fits:
        assert len(refit.C) == 30 and (refit.C[0], refit.C[-1]) == (full.C[0], full.C[-1])
    again, _ = envelope.bootstrap([small, big], n=60, seed=3, points=30)
    assert [f.a for f in again] == [f.a for f in fits]
    inside, _ = envelope.bootstrap([small, big], n=20, seed=3, points=30, C_range=(5e10, 5e11))   # a range given
    assert inside and all((f.C[0], f.C[-1]) == pytest.approx((5e10, 5e11)) for f in inside)
