"""Fits that say when they cannot be trusted: fit.json's warnings, on tables built from known laws.

Each ill-posed table below is one a new user tried; each must produce its warning,
and a well-posed noisy table none at all."""
import json
import math
import subprocess
import sys
import types

import numpy as np
import pytest

from scalelab.core import files
from scalelab.science import scaling
from scalelab.sweep import checks, results
from tests.helpers import REPO, every_pair, noisy

N_GRID = np.geomspace(1e4, 1e7, 10)


def power_table(N, loss):
    return {'N': np.asarray(N, float), 'loss': np.asarray(loss, float)}


def test_a_well_posed_noisy_power_law_gives_no_warnings_and_real_intervals():
    loss = noisy(1.6 + 40.0 * N_GRID ** -0.3, 0.003, seed=0)
    fit = results.fit_table(power_table(N_GRID, loss), 'power', bootstrap=100)
    assert fit.report['warnings'] == []
    boot = fit.report['bootstrap']
    assert boot['alpha']['lo'] < 0.3 < boot['alpha']['hi'] and boot['alpha']['se'] > 1e-3
    assert fit.report['prediction']['lo'] < fit.report['prediction']['loss'] < fit.report['prediction']['hi']


def test_a_well_posed_chinchilla_table_gives_no_warnings():
    truth = scaling.Chinchilla(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.28)
    N, D = every_pair(np.geomspace(1e6, 1e9, 6), np.geomspace(1e8, 1e11, 6))
    data = {'N': N, 'D': D, 'loss': noisy(truth.predict(N, D), 0.003, seed=1)}
    fit = results.fit_table(data, 'chinchilla', bootstrap=20)
    assert fit.report['warnings'] == []
    assert all('loss_lo' in row for row in fit.report['compute_optimal'])


def test_as_many_points_as_parameters_warns_and_reports_no_interval():
    """3 points under 3 parameters interpolate exactly: the bootstrap used to report SE 1e-13."""
    N = N_GRID[[0, 4, 9]]
    fit = results.fit_table(power_table(N, 1.6 + 40.0 * N ** -0.3), 'power', bootstrap=50)
    assert any('3 points for the 3 free parameters' in w for w in fit.report['warnings'])
    assert 'bootstrap' not in fit.report and 'holdout_largest' not in fit.report
    assert set(fit.report['prediction']) == {'N', 'loss'}  # a value, no zero-width interval


def test_one_model_size_is_no_power_law_in_N_and_the_error_says_to_fit_D():
    """Decay branches give one N at several D: L(N) would be fitted to a vertical line."""
    D = np.array([5e5, 1e6, 1.5e6, 3e6])
    table = {'N': np.full(4, 115008.0), 'D': D, 'loss': 1.6 + 40.0 * D ** -0.3}
    with pytest.raises(ValueError, match=r'every row has N = 115,008: it needs several model sizes. .*'
                                         r'--law power --n-col D'):
        results.fit_table(table, 'power', bootstrap=0)
    refit = results.fit_table({'N': D, 'loss': table['loss']}, 'power', bootstrap=0)  # what --n-col D fits
    assert refit.law.params()['alpha'] == pytest.approx(0.3, rel=1e-3)


def test_five_points_under_chinchilla_warn_and_print_no_allocation():
    N = np.array([1e6, 3e6, 1e7, 3e7, 1e8])
    D = np.array([1e9, 3e8, 1e10, 3e9, 1e9])
    truth = scaling.Chinchilla(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.28)
    fit = results.fit_table({'N': N, 'D': D, 'loss': truth.predict(N, D)}, 'chinchilla', bootstrap=20)
    assert any('5 points for the 5 free parameters' in w for w in fit.report['warnings'])
    assert 'compute_optimal' not in fit.report and 'bootstrap' not in fit.report


def test_flat_data_is_called_flat_quickly_without_absurd_parameters():
    loss = noisy(np.full(len(N_GRID), 2.0), 0.01, seed=2)
    law, _ = scaling.fit_power_law(N_GRID, loss)
    # The search box keeps A and E inside exp(14) of the losses (the unbounded fit went to A = 1e-75).
    assert law.A > math.exp(math.log(loss.min()) - 14.5) and law.E > loss.min() * 1e-6
    fit = results.fit_table(power_table(N_GRID, loss), 'power', bootstrap=50)
    assert any('no trend the law resolves' in w for w in fit.report['warnings'])


def test_pure_power_law_data_put_E_on_its_bound_and_say_so():
    loss = 30.0 * N_GRID ** -0.3  # no irreducible term: E = 0
    fit = results.fit_table(power_table(N_GRID, loss), 'power', bootstrap=0)
    assert fit.law.at_bounds == ('E lower',)
    assert any(w.startswith('E = ') and 'lower bound' in w and 'E -> 0' in w for w in fit.report['warnings'])


def test_loss_rising_with_size_is_no_law_and_says_so():
    loss = noisy(2.0 + 0.05 * np.log10(N_GRID), 0.002, seed=3)
    fit = results.fit_table(power_table(N_GRID, loss), 'power', bootstrap=0)
    assert any('no trend the law resolves' in w for w in fit.report['warnings'])


def test_an_optimum_that_shrinks_with_compute_is_a_negative_exponent_and_a_warning():
    """IsoFLOP budgets whose vertices move to smaller N as C grows: a < 0."""
    rows = []
    for C, n_opt in ((1e15, 1e6), (1e16, 5e5), (1e17, 2.5e5)):
        for N in n_opt * np.geomspace(0.25, 4, 7):
            rows.append((N, C, 2.0 + 0.1 * np.log(N / n_opt) ** 2))
    N, C, loss = map(np.array, zip(*rows))
    fit = results.fit_table({'N': N, 'C': C, 'loss': loss}, 'isoflop', bootstrap=0)
    assert fit.law.a == pytest.approx(-math.log10(2), abs=1e-6)
    assert any(w.startswith('a = -0.301') and 'zero or below' in w for w in fit.report['warnings'])


def test_dropped_rows_are_each_named_with_the_reason():
    rows = [{'name': f'p{i}', 'status': 'completed', 'N': str(n), 'loss': str(1.6 + 40 * n ** -0.3)}
            for i, n in enumerate(N_GRID)]
    rows[2]['loss'] = 'nan'
    rows[5]['N'] = '-3'
    rows[7]['status'] = 'diverged'
    del rows[8]['name']
    rows[8]['loss'] = ''
    dropped = []
    data = results.table(rows, dropped=dropped)
    assert len(data['N']) == 6
    fit = results.fit_table(data, 'power', bootstrap=0, dropped=dropped)
    assert fit.report['warnings'][:4] == [
        "row 'p2' left out: loss='nan' is not a finite positive number",
        "row 'p5' left out: N='-3' is not a finite positive number",
        "row 'p7' left out: status 'diverged'",
        "row on line 10 left out: loss='' is not a finite positive number"]


def test_bootstrap_checks_name_failures_and_frozen_parameters():
    params = {'E': 1.5, 'A': 40.0, 'alpha': 0.3}
    moving = {name: {'se': 0.01, 'lo': v - 0.02, 'hi': v + 0.02} for name, v in params.items()}
    assert checks.bootstrap(params, moving, 200, 0) == []
    assert checks.usable_bootstrap(200, 0, moving, params)
    assert checks.bootstrap(params, moving, 200, 20) == [
        '20 of 200 bootstrap refits failed and are left out of the intervals']
    failed = checks.bootstrap(params, moving, 200, 150)
    assert failed == ['150 of 200 bootstrap refits failed: the bootstrap failed, no intervals are reported']
    assert not checks.usable_bootstrap(200, 150, moving, params)
    frozen = {**moving, 'alpha': {'se': 1e-13, 'lo': 0.3, 'hi': 0.3}}
    assert checks.bootstrap(params, frozen, 200, 0) == [
        'the bootstrap cannot vary alpha (standard error 0): its intervals mean nothing and are not reported']
    assert not checks.usable_bootstrap(200, 0, frozen, params)


def test_the_bootstrap_checks_at_their_edges():
    """Exactly half the refits failed is still usable, one more is not; a standard error of
    exactly 1e-9 of the value is frozen, and a value of zero (or a quantity that is not a
    fitted parameter) is held to 1e-21, not to 1e-9."""
    params = {'E': 2.0, 'A': 0.0}
    moving = {'E': {'se': 0.1}, 'A': {'se': 0.1}}
    assert checks.usable_bootstrap(200, 100, moving, params)
    assert checks.bootstrap(params, moving, 200, 100) == [
        '100 of 200 bootstrap refits failed and are left out of the intervals']
    assert not checks.usable_bootstrap(200, 101, moving, params)
    assert checks.bootstrap(params, moving, 200, 101)[0].endswith('the bootstrap failed, no intervals are reported')
    assert checks.frozen_params({'E': {'se': 2e-9}}, params) == ['E']
    assert checks.frozen_params({'E': {'se': 2.1e-9}}, params) == []
    assert checks.frozen_params({'A': {'se': 5e-10}, 'G': {'se': 5e-10}}, params) == []
    assert checks.frozen_params({'A': {'se': 0.0}, 'G': {'se': 1e-22}}, params) == ['A', 'G']
    both = {'E': {'se': 0.0}, 'A': {'se': 0.0}}
    assert checks.bootstrap(params, both, 200, 0) == [
        'the bootstrap cannot vary E, A (standard error 0): its intervals mean nothing and are not reported']
    assert not checks.usable_bootstrap(200, 0, both, params)


def test_the_other_checks_at_their_edges_and_in_their_words():
    """An exponent of exactly 1e-3 is no law, a law that moves the loss by exactly one scatter is
    flat; a bound outside the known meanings still says what it means; the scatter is the RMS
    residual (hand value sqrt(5/2))."""
    assert checks.degrees_of_freedom(3, 3, 'power') == [
        '3 points for the 3 free parameters of the power law: it interpolates them exactly; '
        'no interval, no held-out check and no allocation can be trusted, so none is reported']
    assert checks.degrees_of_freedom(4, 3, 'power') == []
    assert len(checks.exponents({'alpha': 1e-3, 'E': -1.0})) == 1 and checks.exponents({'alpha': 1.1e-3}) == []
    assert len(checks.flat(0.5, 0.5)) == 1 and checks.flat(0.51, 0.5) == []
    upper = types.SimpleNamespace(alpha=9.5, at_bounds=('alpha upper',))
    assert checks.bounds(upper) == [
        'alpha = 9.5 is at the upper bound of its search (the box of the search cuts the optimum off)']
    assert checks.bounds(object()) == []
    assert checks.scatter(np.array([1.0, 2.0]), np.zeros(2)) == pytest.approx(math.sqrt(2.5), rel=1e-12)


def test_the_cli_prints_each_warning_and_writes_them_to_fit_json(tmp_path):
    rows = [{'name': f'p{i}', 'N': n, 'loss': 30.0 * n ** -0.3} for i, n in enumerate(N_GRID)]
    rows[3]['loss'] = float('nan')
    files.write_csv(tmp_path / 'table.csv', rows, ['name', 'N', 'loss'])
    done = subprocess.run([sys.executable, '-m', 'scalelab.sweep', 'fit', f'--results={tmp_path / "table.csv"}',
                           '--law=power', '--bootstrap=20', f'--out={tmp_path / "fit"}'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / 'fit' / 'fit.json').read_text())
    printed = [line.removeprefix('warning: ') for line in done.stderr.splitlines() if line.startswith('warning: ')]
    assert printed == report['warnings'] and len(printed) == 2
    assert printed[0] == "row 'p3' left out: loss='nan' is not a finite positive number"
    assert 'E = ' in printed[1] and 'lower bound' in printed[1]
