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
