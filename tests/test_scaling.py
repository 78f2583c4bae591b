"""Scaling-law fitters against known laws and the published Chinchilla replication."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from scalelab.science import scaling
from tests.helpers import REPO, every_pair, noisy

CHINCHILLA_CSV = REPO / 'experiments' / 'data' / 'chinchilla_svg_extracted_data.csv'


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
    N, D = every_pair(np.geomspace(1e6, 1e9, 7), np.geomspace(1e8, 1e11, 7))
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
    with pytest.raises(ValueError, match='fit_power_law: inputs must be finite and positive'):
        scaling.fit_power_law([1e5, 1e6, -1], [3.0, 2.5, 2.0])
    with pytest.raises(ValueError, match='fit_power_law: inputs must be finite and positive'):
        scaling.fit_power_law([1e5, 1e6, 1e7], [3.0, 2.5, np.nan])
    with pytest.raises(ValueError, match='fit_power_law: inputs must be 1-D and of equal length'):
        scaling.fit_power_law([1e5, 1e6, 1e7, 1e8], [3.0, 2.5, 2.0])


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
    assert scaling.central_interval(values) == pytest.approx((5.0, 95.0), rel=1e-12)   # 90% by default
    assert scaling.central_interval(values[::-1], 0.5) == pytest.approx((25.0, 75.0), rel=1e-12)
    lo, hi = scaling.central_interval(np.stack([values, 2 * values], axis=1), 0.9)
    np.testing.assert_allclose([lo, hi], [[5.0, 10.0], [95.0, 190.0]], rtol=1e-12)


# --- the batched L-BFGS on its own (the fits polish its best starts with scipy, which hides its faults) ---


def recording(fun):
    """`fun` (S x P points to S values and S x P gradients), keeping a copy of each batch asked for."""
    calls = []

    def recorded(x_SxP):
        calls.append(x_SxP.copy())
        return fun(x_SxP)
    return recorded, calls


def quadratic(centre_P, curvature_P=1.0, infinite_beyond=np.inf):
    """0.5 sum curvature (x - centre)^2 on S points; its value infinite where x_0 > infinite_beyond."""
    def fun(x_SxP):
        f_S = 0.5 * (curvature_P * (x_SxP - centre_P) ** 2).sum(axis=1)
        return np.where(x_SxP[:, 0] > infinite_beyond, np.inf, f_S), curvature_P * (x_SxP - centre_P)
    return fun


def test_lbfgs_batched_finds_rosenbrocks_minimum_at_scipys_cost():
    """Unbounded, three starts (S != P): each reaches (1, 1) as scipy's L-BFGS-B does from it, and
    the whole batch takes no more evaluations than 1.5 times scipy's worst single start (54
    against 44 here): a broken two-loop recursion or initial scaling needs 85 or more, one that
    falls back to steepest descent thousands."""
    from scipy.optimize import minimize, rosen, rosen_der
    starts_SxP = np.array([[-1.2, 1.0], [2.0, -1.0], [0.0, 3.0]])
    fun, calls = recording(lambda x_SxP: (np.array([rosen(x) for x in x_SxP]),
                                          np.array([rosen_der(x) for x in x_SxP])))
    x_SxP, f_S = scaling.lbfgs_batched(fun, starts_SxP)
    references = [minimize(rosen, s, jac=rosen_der, method='L-BFGS-B') for s in starts_SxP]
    np.testing.assert_allclose(x_SxP, [r.x for r in references], atol=1e-5)
    np.testing.assert_allclose(x_SxP, 1.0, atol=1e-5)
    assert np.all(f_S < 1e-10)
    assert len(calls) <= 1.5 * max(r.nfev for r in references), len(calls)


def test_lbfgs_batched_takes_the_textbook_steps_on_a_round_quadratic():
    """0.5 |x - c|^2, by hand: the first step is -g, cut to unit length where |g| > 1. From
    |g| = 0.5 that step lands on c, and that start stops (its gradient zero) while the other,
    |g| = 3, goes on alone: its second step scales the inverse Hessian by s.y / y.y = 1, exact
    here, so it lands on c. Every trial point is checked, in order, with the rows evaluated."""
    centre_P = np.array([1.0, 2.0])
    fun, calls = recording(quadratic(centre_P))
    starts_SxP = centre_P + np.array([[3.0, 0.0], [0.0, -0.5]])
    x_SxP, _ = scaling.lbfgs_batched(fun, starts_SxP)
    expected = [starts_SxP, np.stack([centre_P + [2.0, 0.0], centre_P]), centre_P[None]]
    assert [len(c) for c in calls] == [2, 2, 1]
    for seen, trial in zip(calls, expected):
        np.testing.assert_allclose(seen, trial, rtol=0, atol=1e-12)
    np.testing.assert_allclose(x_SxP, np.stack([centre_P, centre_P]), rtol=0, atol=1e-12)


def test_lbfgs_batched_second_step_is_the_bfgs_update_in_matrix_form():
    """On 0.5 x^T diag(0.2, 0.6) x the second trial point is x1 - H1 g1, with H1 the BFGS
    inverse Hessian after one pair written as matrices (Nocedal and Wright, eq. 7.19, from
    H0 = gamma I, gamma = s.y / y.y): the two-loop recursion computes the same product."""
    curvature_P = np.array([0.2, 0.6])
    fun, calls = recording(quadratic(np.zeros(2), curvature_P))
    x0 = np.array([2.0, 1.0])                                   # g0 = (0.4, 0.6): |g0| < 1, a step of -g0
    scaling.lbfgs_batched(fun, x0[None])
    x1 = calls[1][0]
    np.testing.assert_allclose(x1, x0 - curvature_P * x0, rtol=0, atol=1e-15)
    s, y, g1 = x1 - x0, curvature_P * (x1 - x0), curvature_P * x1
    rho, gamma = 1 / (s @ y), (s @ y) / (y @ y)
    V = np.eye(2) - rho * np.outer(y, s)
    H1 = gamma * V.T @ V + rho * np.outer(s, s)
    np.testing.assert_allclose(calls[2][0], x1 - H1 @ g1, rtol=1e-12)


def test_lbfgs_batched_refuses_a_step_that_raises_the_objective_and_halves_it():
    """On h x^2 / 2 with h = 2.0001 the first step, -g, overshoots the minimum to a point a
    hair higher (by (h - 2) / 2 of the predicted decrease: under the 1e-4 an Armijo test with
    its sign flipped would allow); it is refused and the next trial is half of it."""
    h, x0 = 2.0001, 0.4
    fun, calls = recording(quadratic(np.zeros(1), h))
    x_SxP, _ = scaling.lbfgs_batched(fun, np.array([[x0]]))
    np.testing.assert_allclose([c[0, 0] for c in calls[1:3]], [x0 - h * x0, x0 - 0.5 * h * x0], rtol=1e-12)
    assert abs(x_SxP[0, 0]) < 1e-5


@pytest.mark.parametrize('side', ['lower', 'upper'])
def test_lbfgs_batched_stops_on_the_box_where_the_minimum_lies_beyond_it(side):
    """The minimum (-0.5, 0.5, 3) seen through a box on one side only (the other left at its
    default, none): the answer is the centre clipped to the box, from integer starts too.
    A start outside the box, between the bound and the centre, is clipped onto the answer and
    stops there after one evaluation: its gradient (0.25 across the bound: under 1) points out
    of the box, so the projected gradient is zero; without the projection it takes a step more."""
    centre_P = np.array([-0.5, 0.5, 3.0])
    box = {'lower_P': np.zeros(3)} if side == 'lower' else {'upper_P': np.zeros(3)}
    expected_P = np.clip(centre_P, box.get('lower_P'), box.get('upper_P'))
    fun, calls = recording(quadratic(centre_P))
    x_SxP, f_S = scaling.lbfgs_batched(fun, np.array([[0, 0, 0], [1, -2, 5], [-4, 4, -1]]), **box)
    np.testing.assert_allclose(x_SxP, np.broadcast_to(expected_P, x_SxP.shape), atol=1e-7)
    np.testing.assert_allclose(f_S, 0.5 * ((expected_P - centre_P) ** 2).sum(), atol=1e-12)
    assert len(calls) <= 5, len(calls)

    outside_P = expected_P + 0.25 * np.sign(centre_P - expected_P)
    fun, calls = recording(quadratic(centre_P))
    x_SxP, _ = scaling.lbfgs_batched(fun, outside_P[None], **box)
    np.testing.assert_array_equal(x_SxP[0], expected_P)
    assert len(calls) == 1


def test_lbfgs_batched_leaves_converged_and_non_finite_starts_alone():
    """A start already at the minimum, and one where the objective is infinite, are not
    stepped: after the first evaluation only the third start is evaluated, and the infinite
    one comes back where it started, its value still infinite (for the caller to drop)."""
    centre_P = np.array([1.0, -1.0])
    fun, calls = recording(quadratic(centre_P, infinite_beyond=10.0))
    starts_SxP = np.array([centre_P, [20.0, 0.0], [3.0, 2.0]])
    x_SxP, f_S = scaling.lbfgs_batched(fun, starts_SxP)
    assert [len(c) for c in calls[:2]] == [3, 1]
    np.testing.assert_array_equal(x_SxP[:2], starts_SxP[:2])
    assert f_S[0] == 0.0 and f_S[1] == np.inf
    np.testing.assert_allclose(x_SxP[2], centre_P, atol=1e-7)


# --- what the fits report ---------------------------------------------------------


def small_chinchilla_grid():
    g = scaling.HOFFMANN_GRID
    return scaling.grid(g['a'][::2], g['b'][::2], g['alpha'][1::2], g['beta'][1::2], g['e'][::2])


CHINCHILLA_NxD = every_pair(np.geomspace(1e6, 1e9, 4), np.geomspace(1e8, 1e11, 4))


def test_each_fit_reports_its_objective_at_the_huber_delta_it_was_given():
    """The reported objective is lse_objective at the fitted theta, recomputed here, with the
    fit's own delta; at 1% noise a delta of 0.05 (every residual quadratic) and the default
    1e-3 (most of them linear) give objectives a factor apart, so a delta dropped on the way shows."""
    N = np.geomspace(1e4, 1e8, 12)
    loss = noisy(1.5 + 40.0 * N ** -0.3, 0.01, seed=3)
    law, _ = scaling.fit_power_law(N, loss, delta=0.05)
    theta = [math.log(law.A), law.alpha, math.log(law.E)]
    assert law.objective == pytest.approx(
        scaling.lse_objective(np.array(theta), np.log(N)[None], np.log(loss), 0.05)[0], rel=1e-9)
    assert law.objective > 2 * scaling.fit_power_law(N, loss)[0].objective

    N, D = CHINCHILLA_NxD
    loss = noisy(scaling.Chinchilla(E=1.0, A=400.0, B=1500.0, alpha=0.34, beta=0.28).predict(N, D), 0.01, seed=4)
    law, _ = scaling.fit_chinchilla(N, D, loss, starts=small_chinchilla_grid(), delta=0.05)
    theta = [math.log(law.A), math.log(law.B), law.alpha, law.beta, math.log(law.E)]
    assert law.objective == pytest.approx(
        scaling.lse_objective(np.array(theta), np.log(np.stack([N, D])), np.log(loss), 0.05)[0], rel=1e-9)
    assert law.objective > 2 * scaling.fit_chinchilla(N, D, loss, starts=small_chinchilla_grid())[0].objective


def test_search_bounds_by_hand():
    """The box for (a_1, a_2, alpha_1, alpha_2, e), from its rule: e and each a_k from the smallest
    log loss less EXP_RANGE; e up to the largest log loss plus 1, each a_k that plus MAX_EXPONENT
    times its largest log x (none where every log x is negative); exponents in [0, MAX_EXPONENT]."""
    log_x_KxN = np.array([[2.0, 3.0, 0.5], [-1.0, 0.5, 0.25]])
    log_loss_N = np.array([0.3, 0.1, 0.7])
    lower, upper = scaling.search_bounds(log_x_KxN, log_loss_N)
    np.testing.assert_allclose(lower, [0.1 - 14, 0.1 - 14, 0, 0, 0.1 - 14], rtol=1e-15)
    np.testing.assert_allclose(upper, [1.7 + 5 * 3.0, 1.7 + 5 * 0.5, 5, 5, 1.7], rtol=1e-15)
    _, upper = scaling.search_bounds(-np.abs(log_x_KxN) - 0.1, log_loss_N)
    np.testing.assert_allclose(upper[:2], [1.7, 1.7], rtol=1e-15)


def test_minimize_from_starts_searches_the_box_with_its_delta_and_keeps_distinct_optima(monkeypatch):
    """Flat losses (all 1) are fitted exactly by any theta with A -> 0 or alpha = 0 and E + A = 1:
    started from three such points (one twice) the search keeps each, once, as distinct optima
    (0.69 apart: more than the 1e-2 that makes two the same). The batched search is handed the
    box of search_bounds and the objective at the caller's delta; no finite start is an error."""
    log_x_1xN, log_loss_N = np.log(np.geomspace(10, 1e4, 6))[None], np.zeros(6)
    handed = {}
    real_lbfgs = scaling.lbfgs_batched

    def noting_what_it_is_handed(fun, x_SxP, **box):
        handed.update(box, value=fun(np.zeros((1, 3)))[0])
        return real_lbfgs(fun, x_SxP, **box)
    monkeypatch.setattr(scaling, 'lbfgs_batched', noting_what_it_is_handed)
    on_floor, half = [-14.0, 1.0, 0.0], [math.log(0.5), 0.0, math.log(0.5)]
    quarter = [math.log(0.25), 0.0, math.log(0.75)]
    optima = scaling.minimize_from_starts(log_x_1xN, log_loss_N, np.array([on_floor, half, quarter, on_floor]),
                                          delta=0.3)
    assert len(optima) == 3
    for found, start in zip(sorted(o.theta.tolist() for o in optima), sorted([on_floor, half, quarter])):
        np.testing.assert_allclose(found, start, atol=1e-6)
    for side, edge in zip(('lower_P', 'upper_P'), scaling.search_bounds(log_x_1xN, log_loss_N)):
        np.testing.assert_array_equal(handed[side], edge)
    assert handed['value'][0] == scaling.lse_objective(np.zeros(3), log_x_1xN, log_loss_N, 0.3)[0]   # residuals log 2
    with pytest.raises(RuntimeError, match='^no start converged to a finite objective$'):
        scaling.minimize_from_starts(log_x_1xN, log_loss_N, np.array([[np.nan, 1.0, 0.0]]))


def test_fits_name_an_exponent_left_on_its_upper_bound():
    """A loss falling as x^-8 over x in [1.5, 5] is steeper than MAX_EXPONENT allows: alpha stops
    at 5 and both fits name it as on its upper edge (a hard edge: the E = 0 edge is so flat in
    e that whether a fit reaches it within BOUND_TOL depends on the search's path)."""
    x = np.geomspace(1.5, 5, 8)
    law, _ = scaling.fit_power_law(x, 1.0 + 50.0 * x ** -8.0)
    assert law.alpha == pytest.approx(scaling.MAX_EXPONENT, abs=1e-9)
    assert law.at_bounds == ('alpha upper',)
    N, D = every_pair(np.geomspace(1.5, 5, 4), np.geomspace(1e8, 1e11, 4))
    law, _ = scaling.fit_chinchilla(N, D, 1.0 + 50.0 * N ** -8.0 + 1500.0 * D ** -0.28, starts=small_chinchilla_grid())
    assert law.alpha == pytest.approx(scaling.MAX_EXPONENT, abs=1e-9)
    assert law.at_bounds == ('alpha upper',)
    assert law.beta == pytest.approx(0.28, abs=1e-4)


@pytest.mark.parametrize('bad', ['N', 'D', 'loss'])
def test_chinchilla_fit_rejects_each_bad_column_by_name(bad):
    N, D = CHINCHILLA_NxD
    columns = {'N': N, 'D': D, 'loss': 2.0 + 0 * N}
    columns[bad] = np.where(np.arange(len(N)) == 3, 0.0, columns[bad])
    with pytest.raises(ValueError, match='fit_chinchilla: inputs must be finite and positive'):
        scaling.fit_chinchilla(**columns)
    with pytest.raises(ValueError, match='fit_chinchilla: need at least 5 points for 5 parameters, got 4'):
        scaling.fit_chinchilla(N[:4], D[:4], 2.0 + 0 * N[:4])


def test_a_law_rebuilds_from_its_params_and_describes_its_own_numbers():
    """params() are the constructor's names (what fit.json stores and `sweep fit` reads back);
    describe() prints the law's parameters and, for Chinchilla, the exponents of N_opt and
    D_opt in C, read here off optimal_allocation's slope in log-log."""
    power = scaling.PowerLaw(E=1.5, A=40.0, alpha=0.3)
    assert scaling.PowerLaw(**power.params()) == power
    assert power.describe() == 'L(N) = 1.5 + 40 / N^0.3000'
    assert power.describe('C') == 'L(C) = 1.5 + 40 / C^0.3000'
    law = scaling.Chinchilla(E=1.82, A=482.0, B=2085.0, alpha=0.348, beta=0.366)
    assert scaling.Chinchilla(**law.params()) == law
    slopes = [np.diff(np.log(v))[0] / np.log(100.0) for v in law.optimal_allocation(np.array([1e20, 1e22]))]
    assert law.describe() == (f'L(N, D) = 1.82 + 482 / N^0.3480 + 2085 / D^0.3660; '
                              f'N_opt ∝ C^{slopes[0]:.3f}, D_opt ∝ C^{slopes[1]:.3f}')


def test_optimal_allocation_takes_an_exact_integer_budget_beyond_int64():
    """6 N D as Python ints passes 2^63 at 1e9 parameters and 2e9 tokens: it must compute in
    floats (an object array would reach np.log as Python floats and fail)."""
    law = scaling.Chinchilla(E=1.82, A=482.0, B=2085.0, alpha=0.348, beta=0.366)
    budgets = [6 * 10 ** 12 * 10 ** 13, 6 * 10 ** 9 * 2 * 10 ** 9]
    as_int, as_float = law.optimal_allocation(budgets), law.optimal_allocation(np.array(budgets, float))
    np.testing.assert_allclose(np.log(as_int), np.log(as_float), rtol=1e-15)


# --- bootstrap and its summaries ---------------------------------------------------


class RecordingFit:
    """A stand-in fit that records what bootstrap hands it: its columns and starts; the law is
    the mean of the resampled loss (a PowerLaw with A = 0), and every `fail_every`-th call fails."""

    def __init__(self, fail_every=0):
        self.calls, self.fail_every = [], fail_every

    def __call__(self, x, loss, starts):
        self.calls.append((x, loss, starts))
        if self.fail_every and len(self.calls) % self.fail_every == 0:
            raise RuntimeError('no start converged to a finite objective')
        return scaling.PowerLaw(E=float(np.mean(loss)), A=0.0, alpha=0.0), []


def optima_with(thetas):
    return [scaling.Optimum(np.array(t, float), 0.0) for t in thetas]


def test_bootstrap_resamples_rows_together_from_the_full_fits_best_optima(monkeypatch, capsys):
    """200 refits by default, each on rows drawn with replacement (x and loss drawn together,
    every row drawn at some point), each started from the full fit's first four optima;
    failed refits counted; seed 0 by default, the same seed the same draws; progress shows as 'bootstrap ... fit'."""
    x = np.arange(1.0, 7.0)
    loss = 10.0 * x
    optima = optima_with([[i, 0.0, 0.0] for i in range(6)])
    fit = RecordingFit(fail_every=7)
    monkeypatch.setattr(scaling.progress, 'bars_enabled', lambda stream=None: True)
    laws, failed = scaling.bootstrap(fit, [x, loss], optima)
    progress_shown = capsys.readouterr().err
    assert 'bootstrap:' in progress_shown and 'fit/s' in progress_shown, progress_shown
    assert len(fit.calls) == 200 and (failed, len(laws)) == (200 // 7, 200 - 200 // 7)
    drawn = np.concatenate([c[0] for c in fit.calls])
    assert set(drawn) == set(x)
    for resample_x, resample_loss, starts in fit.calls:
        np.testing.assert_array_equal(resample_loss, 10.0 * resample_x)
        np.testing.assert_array_equal(starts, [o.theta for o in optima[:4]])
    for seed, same in ((0, True), (1, False)):   # the default seed is 0
        again = RecordingFit(fail_every=7)
        scaling.bootstrap(again, [x, loss], optima, seed=seed)
        assert np.array_equal([c[0] for c in again.calls], [c[0] for c in fit.calls]) == same


def test_summaries_of_bootstrap_laws_against_the_statistics_module():
    """Mean, sample standard error (n - 1) and central interval of each parameter, and the
    predictions' band, at the default level (90%) and another, against statistics and by-hand quantiles."""
    import statistics
    rng = np.random.default_rng(5)
    laws = [scaling.PowerLaw(E=e, A=a, alpha=al) for e, a, al in
            zip(rng.normal(1.5, 0.1, 41), rng.normal(40.0, 4.0, 41), rng.normal(0.3, 0.02, 41))]
    for level, kwargs in ((0.9, {}), (0.5, {'level': 0.5})):
        summary = scaling.summarize(laws, **kwargs)
        assert set(summary) == {'E', 'A', 'alpha'}
        for name, stats in summary.items():
            values = sorted(getattr(law, name) for law in laws)
            tail = round((1 - level) / 2 * 40)       # 41 draws: the quantiles fall on draws 2/38 and 10/30
            assert stats == pytest.approx({'mean': statistics.mean(values), 'se': statistics.stdev(values),
                                           'lo': values[tail], 'hi': values[40 - tail]}, rel=1e-12)
        x = np.array([1e3, 1e6])
        lo, hi = scaling.prediction_interval(laws, x, **kwargs)
        predictions = np.sort([[law.E + law.A * v ** -law.alpha for v in x] for law in laws], axis=0)
        np.testing.assert_allclose([lo, hi], [predictions[tail], predictions[40 - tail]], rtol=1e-12)
