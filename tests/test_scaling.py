"""Scaling-law fitters against known laws and the published Chinchilla replication."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from scalelab.science import scaling
from tests.helpers import REPO

CHINCHILLA_CSV = REPO / 'experiments' / 'data' / 'chinchilla_svg_extracted_data.csv'


def noisy(loss, rel, seed):
    return loss * np.exp(np.random.default_rng(seed).normal(0, rel, size=np.shape(loss)))


def test_huber_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    log_x = np.log(rng.uniform(1e6, 1e10, size=(2, 30)))
    log_loss = np.log(rng.uniform(2, 4, size=30))
    theta = np.array([6.0, 7.0, 0.3, 0.35, 0.5])
    _, grad = scaling.lse_objective(theta, log_x, log_loss, delta=0.1)
    eps = 1e-6
    numeric = [(scaling.lse_objective(theta + eps * e, log_x, log_loss, 0.1)[0]
                - scaling.lse_objective(theta - eps * e, log_x, log_loss, 0.1)[0]) / (2 * eps) for e in np.eye(5)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_power_law_recovers_known_parameters():
    N = np.geomspace(1e4, 1e8, 14)
    loss = noisy(1.5 + 40.0 * N ** -0.3, 0.003, seed=1)
    law, _ = scaling.fit_power_law(N, loss)
    assert law.E == pytest.approx(1.5, abs=0.03)
    assert law.alpha == pytest.approx(0.3, abs=0.02)
    assert law.A == pytest.approx(40.0, rel=0.25)


def test_chinchilla_recovers_known_parameters():
    truth = scaling.Chinchilla(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.28)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 7), np.geomspace(1e8, 1e11, 7)))
    loss = noisy(truth.predict(N, D), 0.002, seed=2)
    g = scaling.HOFFMANN_GRID  # every other start: enough for clean synthetic data
    starts = scaling.grid(g['a'][::2], g['b'][::2], g['alpha'], g['beta'], g['e'][::2])
    law, _ = scaling.fit_chinchilla(N, D, loss, starts=starts)
    assert law.E == pytest.approx(1.7, abs=0.03)
    assert law.alpha == pytest.approx(0.34, abs=0.02)
    assert law.beta == pytest.approx(0.28, abs=0.02)
    # compute-optimal allocation agrees with the true law's
    for ours, true in zip(law.optimal_allocation(1e21), truth.optimal_allocation(1e21)):
        assert ours == pytest.approx(true, rel=0.3)


@pytest.mark.parametrize('law', [scaling.Chinchilla(E=1.82, A=482.0, B=2085.0, alpha=0.348, beta=0.366),
                                 scaling.Chinchilla(E=0.5, A=30.0, B=300.0, alpha=0.5, beta=0.25)])
def test_compute_optimal_allocation_is_the_numeric_minimum_along_the_iso_compute_line(law):
    """N_opt against an independent reference: scipy's bounded minimisation of L(N, C / 6N)
    over log N (a G without its alpha/beta factor puts N_opt 7% off, which this catches)."""
    from scipy.optimize import minimize_scalar
    for C in (1e18, 1e22, 1e26):
        n_opt, d_opt = law.optimal_allocation(C)
        assert 6 * n_opt * d_opt == pytest.approx(C, rel=1e-9)
        numeric = minimize_scalar(lambda log_n: law.predict(math.exp(log_n), C / (6 * math.exp(log_n))),
                                  bounds=(math.log(n_opt) - 5, math.log(n_opt) + 5), method='bounded',
                                  options={'xatol': 1e-10})
        assert math.exp(numeric.x) == pytest.approx(n_opt, rel=1e-4)


def test_fits_reject_bad_input_clearly():
    with pytest.raises(ValueError, match='need at least 3 points'):
        scaling.fit_power_law([1e5, 1e6], [3.0, 2.5])
    with pytest.raises(ValueError, match='finite and positive'):
        scaling.fit_power_law([1e5, 1e6, -1], [3.0, 2.5, 2.0])


@pytest.mark.slow
def test_chinchilla_replication_matches_besiroglu_et_al(tmp_path):
    """Approach 3 on Epoch's digitised Chinchilla data (5 highest losses dropped,
    D = C / 6N) reproduces Besiroglu et al. (2024), Table 1: E 1.82 (SE 0.03),
    A 482 (124.6), B 2085 (1293), alpha 0.3478 (0.02), beta 0.3658 (0.02)."""
    done = subprocess.run(
        [sys.executable, '-m', 'scalelab.sweep', 'fit', f'--results={CHINCHILLA_CSV}', '--n_col=Model Size',
         '--c_col=Training FLOP', '--drop_top_loss=5', '--law=chinchilla', '--bootstrap=200', f'--out={tmp_path}'],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / 'fit.json').read_text())
    params, boot = report['params'], report['bootstrap']
    assert report['rows'] == 240
    assert params['E'] == pytest.approx(1.82, abs=0.005)
    assert params['alpha'] == pytest.approx(0.3478, abs=0.005)
    assert params['beta'] == pytest.approx(0.3658, abs=0.005)
    assert params['A'] == pytest.approx(482.0, rel=0.05)
    assert params['B'] == pytest.approx(2085.0, rel=0.05)
    for name, published in (('E', 0.03), ('alpha', 0.02), ('beta', 0.02), ('A', 124.58)):
        assert published / 2 < boot[name]['se'] < published * 2, name
    assert (tmp_path / 'scaling.png').stat().st_size > 10_000


def test_central_interval_is_the_two_tail_quantiles_by_hand():
    """Of 0, 1, ..., 100 the central 90% runs from 5 to 95 and the central 50% from 25 to 75;
    of draws with a second axis, each column's own."""
    values = np.arange(101.0)
    assert scaling.central_interval(values, 0.9) == pytest.approx((5.0, 95.0), rel=1e-12)
    assert scaling.central_interval(values[::-1], 0.5) == pytest.approx((25.0, 75.0), rel=1e-12)
    lo, hi = scaling.central_interval(np.stack([values, 2 * values], axis=1), 0.9)
    np.testing.assert_allclose([lo, hi], [[5.0, 10.0], [95.0, 190.0]], rtol=1e-12)
