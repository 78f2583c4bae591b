"""The learning-rate and batch laws in compute: exponents recovered from a synthetic table
whose loss is an exact quadratic around known power laws, a budget whose grid misses its
optimum flagged, and the fit command end to end."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from scalelab.sweep import hparam_laws
from tests.helpers import REPO

BUDGETS = (1e14, 1e15, 1e16, 1e17)


def truth_lr(C):
    return 0.3 * C ** -0.125


def truth_batch(C):
    return 0.3 * C ** 0.3


def synthetic(budgets=BUDGETS, shift_lr=0.0, seed=None):
    """Per budget a 5 x 4 grid around the true optimum (shifted by shift_lr decades); the loss
    a quadratic in (log10 lr, log10 batch) with a cross term, plus noise when seeded."""
    rng = np.random.default_rng(seed) if seed is not None else None
    rows = []
    for C in budgets:
        x0, y0 = np.log10(truth_lr(C)), np.log10(truth_batch(C))
        for dx in np.linspace(-0.6, 0.6, 5) + shift_lr:
            for dy in np.linspace(-0.45, 0.45, 4):
                x, y = x0 + dx, y0 + dy
                loss = 3.0 - 0.1 * np.log10(C) + 0.5 * (x - x0) ** 2 + 0.3 * (y - y0) ** 2 + 0.1 * (x - x0) * (y - y0)
                if rng is not None:
                    loss += rng.normal(0, 0.002)
                rows.append({'C': C, 'lr': 10 ** x, 'batch': 10 ** y, 'loss': loss})
    return {key: np.array([r[key] for r in rows]) for key in ('C', 'lr', 'batch', 'loss')}


def test_exact_quadratics_give_back_the_power_laws():
    fit = hparam_laws.fit(synthetic(), bootstrap=0)
    assert fit.law.lr_exponent == pytest.approx(-0.125, abs=1e-9)
    assert fit.law.batch_exponent == pytest.approx(0.3, abs=1e-9)
    assert fit.law.lr_coefficient == pytest.approx(0.3, rel=1e-8)
    assert fit.law.batch_coefficient == pytest.approx(0.3, rel=1e-8)
    for optimum, C in zip(fit.report['optima'], BUDGETS):
        assert optimum['lr_opt'] == pytest.approx(truth_lr(C), rel=1e-8) and not optimum['at_edge']
    assert fit.report['warnings'] == [] and fit.report['deepseek'] == {'lr_exponent': -0.125, 'batch_exponent': 0.327}


def test_noisy_runs_get_intervals_that_hold_the_truth():
    fit = hparam_laws.fit(synthetic(seed=0), bootstrap=100)
    stats = fit.report['bootstrap']
    assert stats['lr_exponent']['lo'] < -0.125 < stats['lr_exponent']['hi']
    assert stats['batch_exponent']['lo'] < 0.3 < stats['batch_exponent']['hi']
    assert stats['resamples'] == 100


def test_a_grid_that_misses_the_optimum_and_too_few_budgets_are_named():
    data = synthetic(shift_lr=1.0)  # every grid a decade above the best learning rate
    fit = hparam_laws.fit(data, bootstrap=0)
    assert all(o['at_edge'].startswith("the surface's minimum, learning rate") for o in fit.report['optima'])
    assert any('optimum at its best run' in w and 'widen the grid' in w for w in fit.report['warnings'])
    two = hparam_laws.fit(synthetic(budgets=BUDGETS[:2]), bootstrap=0)
    assert 'only 2 budgets' in two.report['warnings'][-1]
    thin = synthetic(budgets=BUDGETS[:1])
    with pytest.raises(ValueError, match='hparams: need 2 or more budgets with a fitted optimum, found 1 of 1'):
        hparam_laws.fit(thin, bootstrap=0)


def test_the_fit_command_reads_a_sweeps_columns_and_draws_the_laws(tmp_path):
    data = synthetic(seed=1)
    path = tmp_path / 'results.csv'
    with path.open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['name', 'status', 'C', 'optim.learning_rate', 'train.global_batch', 'loss'])
        for i in range(len(data['C'])):
            writer.writerow([f'p{i}', 'completed', data['C'][i], data['lr'][i], data['batch'][i], data['loss'][i]])
        writer.writerow(['broken', 'diverged', 1e15, 1e-3, 32, ''])
    done = subprocess.run([sys.executable, '-m', 'scalelab.sweep', 'fit', f'--results={path}', '--law=hparams',
                           '--bootstrap=50', f'--out={tmp_path}'], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / 'fit.json').read_text())
    assert report['params']['lr_exponent'] == pytest.approx(-0.125, abs=0.02)
    assert "'broken'" in ' '.join(report['warnings']) and (tmp_path / 'scaling.png').stat().st_size > 10000
    assert 'budget C=1e+14 (20 runs): lr ' in done.stdout and 'B_opt = ' in done.stdout
