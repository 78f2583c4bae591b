"""Chinchilla's three approaches on one sweep's runs, and the study that checks its prediction."""
import json
import math

import numpy as np
import pytest

from scalelab.core import files
from scalelab.science import scaling
from scalelab.sweep import compute_optimal, results
from scalelab.sweep import points as points_lib
from tests.helpers import REPO

TRUTH = scaling.Chinchilla(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.28)


def fake_sweep(root, truth, budgets, sizes=7, noise=0.0, seed=0, evals=8):
    """A sweep directory as a real one leaves it: points/<name>/metrics.jsonl (training lines
    every step-tenth and `evals` evaluations) and results rows, the losses those of `truth`
    at (N, D seen so far), times exp(noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for b, C in enumerate(budgets):
        n_opt, _ = truth.optimal_allocation(C)
        for k, N in enumerate(n_opt * np.geomspace(0.3, 3.3, sizes)):
            name = f'b{b}-n{k}'
            D = C / (6 * N)
            steps = 100
            tokens = D * np.arange(1, steps + 1) / steps
            loss = truth.predict(N, tokens) * np.exp(rng.normal(0, noise, steps))
            lines = [{'step': s + 1, 'loss': float(loss[s]), 'tokens': float(tokens[s])} for s in range(9, steps, 10)]
            lines += [{'step': s, 'eval_loss': float(loss[s - 1])} for s in range(steps // evals, steps + 1, steps // evals)]
            lines.sort(key=lambda r: (r['step'], 'eval_loss' in r))
            (root / 'points' / name).mkdir(parents=True)
            (root / 'points' / name / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
            rows.append({'name': name, 'status': 'completed', 'N': N, 'D': D, 'C': 6 * N * D, 'loss': float(loss[-1])})
    return rows


def test_the_three_approaches_recover_a_known_allocation_and_predict_the_next_budget(tmp_path):
    budgets = np.geomspace(1e18, 1e20, 4)
    rows = fake_sweep(tmp_path, TRUTH, budgets, noise=0.002)
    dropped = []
    data = results.table(rows, dropped=dropped)
    fit = compute_optimal.fit(rows, data, tmp_path / 'points', bootstrap=40)
    a_true = TRUTH.beta / (TRUTH.alpha + TRUTH.beta)
    by_approach = {row['approach']: row for row in fit.report['comparison'] if row['C'] == pytest.approx(budgets[-1])}
    assert by_approach['approach2']['a'] == pytest.approx(a_true, abs=0.03)
    assert by_approach['approach3']['a'] == pytest.approx(a_true, abs=0.03)
    assert by_approach['approach1']['a'] == pytest.approx(a_true, abs=0.08)  # sizes 0.17 decades apart: a staircase
    for row in by_approach.values():
        assert row['a_lo'] <= row['a'] <= row['a_hi']
        assert row['tokens_per_param'] == pytest.approx(row['D_opt'] / row['N_opt'])
    prediction = fit.report['prediction']
    assert prediction['C'] == pytest.approx(10 * budgets[-1], rel=1e-9)
    n_true, d_true = TRUTH.optimal_allocation(prediction['C'])
    assert prediction['N_opt'] == pytest.approx(n_true, rel=0.3)
    assert 6 * prediction['N_opt'] * prediction['D_opt'] == pytest.approx(prediction['C'])
    true_loss = TRUTH.predict(prediction['N_opt'], prediction['D_opt'])
    assert prediction['loss_lo'] < true_loss < prediction['loss_hi']
    assert prediction['loss_hi'] - prediction['loss_lo'] < 0.05


def test_the_report_holds_each_approach_its_runs_and_a_reproducible_interval(tmp_path):
    """fit.json's contents against what made them: each approach's own report, the envelope's
    runs, compute range and sizes read off the curves, warnings gathered from every approach
    (a dropped row, each approach's own), rows at the largest budget and 10x it, the
    prediction drawn from the seed (same seed, same interval; a narrower level, a narrower one)."""
    budgets = np.geomspace(1e18, 1e20, 4)
    rows = fake_sweep(tmp_path, TRUTH, budgets, noise=0.002)
    rows.append({'name': 'broken', 'status': 'failed', 'N': 1e6, 'D': 1e9, 'C': 6e15, 'loss': ''})
    dropped = []
    data = results.table(rows, dropped=dropped)
    fit = compute_optimal.fit(rows, data, tmp_path / 'points', bootstrap=12, dropped=dropped, tol=0.1)
    report = fit.report
    assert report['law'] == 'compute_optimal' and report['rows'] == len(rows) - 1
    assert [report[a]['law'] for a in compute_optimal.APPROACHES] == ['envelope', 'isoflop', 'chinchilla']
    assert set(fit.law) == set(compute_optimal.APPROACHES) and fit.law['approach3'].report is report['approach3']
    one = report['approach1']
    curves = compute_optimal.curves(rows, tmp_path / 'points', 'eval_loss')
    assert one['runs'] == len(curves) == len(rows) - 1 and one['curve_metric'] == 'eval_loss'
    finals = sorted(c.C[-1] for c in curves)  # the envelope's grid: smallest to largest final compute
    assert one['C_range'] == pytest.approx([finals[0], finals[-1]], rel=1e-9)
    assert set(one['sizes_on_envelope']) <= {c.N for c in curves} and len(one['sizes_on_envelope']) > 3
    assert report['warnings'][0] == "row 'broken' left out: status 'failed'"
    own = [f'{name}: {w}' for name in compute_optimal.APPROACHES for w in report[name]['warnings']]
    assert report['warnings'][1:] == own + report['prediction']['warnings']
    E_share = TRUTH.E / TRUTH.predict(report['prediction']['N_opt'], report['prediction']['D_opt'])
    assert report['prediction']['E_share'] == pytest.approx(E_share, rel=0.02)
    assert E_share < 0.8 and report['prediction']['warnings'] == []  # 57% E at 10x: nothing to say
    assert [(r['approach'], r['C']) for r in report['comparison']] == [
        (a, C) for a in compute_optimal.APPROACHES for C in (budgets[-1], 10 * budgets[-1])]
    again = compute_optimal.fit(rows, data, tmp_path / 'points', bootstrap=12, dropped=[])
    assert again.report['prediction']['loss_lo'] == report['prediction']['loss_lo']
    assert again.report['approach1']['bootstrap'] == report['approach1']['bootstrap']
    narrow = compute_optimal.fit(rows, data, tmp_path / 'points', bootstrap=12, level=0.5)
    p, q = report['prediction'], narrow.report['prediction']
    assert q['level'] == 0.5 and q['loss_hi'] - q['loss_lo'] < p['loss_hi'] - p['loss_lo']
    assert narrow.report['approach3']['bootstrap']['level'] == 0.5
    assert narrow.report['approach2']['bootstrap']['level'] == 0.5
    assert narrow.report['approach1']['bootstrap']['level'] == 0.5
    with pytest.raises(ValueError, match=r"beside the table \(give a sweep's own results.csv\)$"):
        compute_optimal.fit(rows, data, tmp_path / 'nowhere', bootstrap=0)


def test_a_prediction_that_is_mostly_e_says_so():
    C = np.array([1e11, 1e13])
    assert compute_optimal.mostly_e(0.7, 1.0, C) == []
    at_edge = compute_optimal.mostly_e(0.8, 1.0, C)
    assert at_edge == ["the predicted loss 1 is 80% the fit's irreducible loss E = 0.8: it rests on E, which 2.0 "
                       'decades of compute resolve poorly, and its interval does not carry that (a law still falling '
                       'at the largest budget makes E, and the prediction, too high)']
    assert ' is 89% the fit' in compute_optimal.mostly_e(1.6, 1.8, C)[0]  # E / loss (E x loss would read 288%)
    # the IsoFLOP study's own prediction (E 1.03 of 1.137, over 1.5 decades) would have carried it
    assert compute_optimal.mostly_e(1.03, 1.137, np.array([3.16e11, 1e13]))


def test_the_sweep_cli_writes_the_comparison_and_a_figure_per_approach(tmp_path):
    import subprocess
    import sys
    rows = fake_sweep(tmp_path, TRUTH, np.geomspace(1e18, 1e20, 4), noise=0.002)
    files.write_csv(tmp_path / 'results.csv', rows, ['name', 'status', 'N', 'D', 'C', 'loss'])
    done = subprocess.run([sys.executable, '-m', 'scalelab.sweep', 'fit', f'--results={tmp_path / "results.csv"}',
                           '--law=compute_optimal', '--bootstrap=20'], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    for name in ('fit.json', 'scaling.png', 'approach1.png', 'approach2.png', 'approach3.png'):
        assert (tmp_path / name).stat().st_size > 5_000, name
    report = json.loads((tmp_path / 'fit.json').read_text())
    printed = [line.split() for line in done.stdout.splitlines() if line.strip().startswith('approach') and line.split()[1] != 'C']
    assert [p[0] for p in printed] == ['approach1'] * 2 + ['approach2'] * 2 + ['approach3'] * 2
    assert float(printed[2][2]) == pytest.approx(report['comparison'][2]['a'], abs=5e-4)
    assert 'prediction at C=1e+21' in done.stdout


def test_the_isoflop_study_meets_its_bar():
    """The shipped study, read from the run configs its points resolve to: >= 4 budgets over
    >= 1.5 decades, >= 6 sizes at each, no run past 4 epochs of the stdlib's training bytes,
    each cosine schedule ending at its own last step, warmup and learning rate by one rule."""
    import os
    from scalelab.data import text
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        sweep = points_lib.load_experiment('experiments/isoflop_stdlib.py')
        points = points_lib.expand(sweep, 1)
    finally:
        os.chdir(cwd)
    budgets = sorted({p.axes['train.flops'] for p in points})
    assert len(budgets) >= 4 and math.log10(budgets[-1] / budgets[0]) >= 1.5 - 1e-9
    train_bytes = sum(p.stat().st_size for p in text.split_files(text.list_files('', '*.py'), 0.05)[0])
    for budget in budgets:
        at = [p for p in points if p.axes['train.flops'] == budget]
        assert len({p.config.model.d_model * 100 + p.config.model.n_layers for p in at}) >= 6, budget
        for p in at:
            c = p.config
            tokens = c.train.steps * c.train.global_batch * c.data.seq_len
            assert tokens / train_bytes <= 4.0
            assert c.optim.schedule == 'cosine' and c.optim.warmup_steps == round(0.05 * c.train.steps)
            assert c.optim.learning_rate == sweep.overrides['optim.learning_rate']
            assert 6 * points_lib.count(p.plan, 'with_head') * tokens == pytest.approx(budget, rel=0.01)


def test_predict_writes_the_run_to_train_and_verify_sets_its_loss_against_the_interval(tmp_path, monkeypatch):
    """predict: the prediction's keys, the shape the sweep's rule solves for N_opt, and the
    command that trains it; verify: the trained run's metric against the interval, refusing a
    run that is not the predicted one."""
    from scalelab.sweep import verify
    monkeypatch.chdir(REPO)
    sweep = points_lib.load_experiment('experiments/isoflop_stdlib.py:tiny')
    files.write_json(tmp_path / 'sweep.json', sweep.to_dict())
    files.write_json(tmp_path / 'fit.json', {'law': 'compute_optimal', 'prediction': {
        'C': 6e10, 'N_opt': 2.0e4, 'D_opt': 6e10 / 1.2e5, 'loss': 2.1, 'loss_lo': 2.0, 'loss_hi': 2.2, 'level': 0.9,
        'N_opt_by_approach': {'approach1': 2e4, 'approach2': 2e4, 'approach3': 2e4}, 'rule': 'geometric mean'}})
    predicted = verify.prediction(tmp_path)
    assert {'C', 'N_opt', 'D_opt', 'loss', 'loss_lo', 'loss_hi'} <= set(predicted)
    import subprocess
    import sys
    out = tmp_path / 'not' / 'yet' / 'prediction.json'  # --out into folders that do not exist yet
    done = subprocess.run([sys.executable, '-m', 'scalelab.sweep', 'predict', f'--workdir={tmp_path}', f'--out={out}'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    assert {k: written[k] for k in ('C', 'N_opt', 'D_opt', 'loss')} == {k: predicted[k] for k in
                                                                      ('C', 'N_opt', 'D_opt', 'loss')}
    shape = predicted['trained_shape']
    assert abs(shape['N'] / 2.0e4 - 1) <= 0.05 and shape['D'] == pytest.approx(6e10 / (6 * shape['N']))
    assert predicted['overrides']['train.flops'] == 6e10
    assert f'--config.model.d_model={shape["d_model"]}' in predicted['command']
    run = tmp_path / 'run'
    run.mkdir()
    saved = {'model': {'d_model': shape['d_model'], 'n_layers': shape['n_layers']}, 'train': {'flops': 6e10}}
    for key, value in predicted['overrides'].items():  # the run as `command` resolves it
        section, name = key.split('.')
        saved.setdefault(section, {}).setdefault(name, value)
    files.write_json(run / 'config.json', saved)
    files.write_json(run / 'summary.json', {'status': 'completed', 'eval_loss': 2.25, 'tokens': shape['D'],
                                            'params': {'with_head': shape['N']}})
    measured = verify.verification(predicted, run)
    assert measured['loss'] == 2.25 and measured['inside'] is False
    assert measured['relative_error'] == pytest.approx(2.1 / 2.25 - 1)
    with open(run / 'metrics.jsonl', 'w') as f:   # two evaluations, a training record between
        for record in ({'step': 50, 'eval_loss': 2.6}, {'step': 60, 'loss': 2.4}, {'step': 200, 'eval_loss': 2.25}):
            f.write(json.dumps(record) + '\n')
    assert verify.eval_curve(run, 6e10) == [(1.5e10, 2.6), (6e10, 2.25)]
    saved['model']['d_model'] += 16
    files.write_json(run / 'config.json', saved)
    with pytest.raises(ValueError, match='not the predicted run: model.d_model='):
        verify.verification(predicted, run)


def test_each_comparison_row_is_its_approachs_laws_at_c(tmp_path):
    """Every comparison row against the approach's own law and bootstrap laws, by hand: a and
    b = 1 - a, N_opt, D_opt, D/N and each one's central interval; the bootstrap's size, seed
    and budgets reach every approach; a failed run's curve and a step at zero tokens are left out."""
    budgets = np.geomspace(1e18, 1e20, 4)
    rows = fake_sweep(tmp_path, TRUTH, budgets, noise=0.002)
    first = tmp_path / 'points' / rows[0]['name'] / 'metrics.jsonl'  # a logged step before any token
    first.write_text(json.dumps({'step': 0, 'loss': 99.0, 'tokens': 0.0}) + '\n' + first.read_text())
    failed = dict(rows[1], name='failed-with-curve', status='failed')
    (tmp_path / 'points' / 'failed-with-curve').mkdir()
    (tmp_path / 'points' / 'failed-with-curve' / 'metrics.jsonl').write_text(
        (tmp_path / 'points' / rows[1]['name'] / 'metrics.jsonl').read_text())
    rows = [failed] + rows  # first, so a `break` would lose every row after it
    data = results.table(rows)
    fit = compute_optimal.fit(rows, data, tmp_path / 'points', bootstrap=12, level=0.8)
    report = fit.report
    for row in report['comparison']:
        law, laws = fit.law[row['approach']].law, fit.law[row['approach']].laws
        n_opt, d_opt = law.optimal_allocation(row['C'])
        assert (row['N_opt'], row['D_opt']) == pytest.approx((n_opt, d_opt)) and row['b'] == pytest.approx(1 - row['a'])
        allocations = np.array([l.optimal_allocation(row['C']) for l in laws])
        boot_a = [compute_optimal.exponents(l)['a'] for l in laws]
        for key, values in (('a', boot_a), ('b', [1 - a for a in boot_a]), ('N_opt', allocations[:, 0]),
                            ('D_opt', allocations[:, 1]), ('tokens_per_param', allocations[:, 1] / allocations[:, 0])):
            assert (row[f'{key}_lo'], row[f'{key}_hi']) == pytest.approx(scaling.central_interval(values, 0.8))
    assert [report[a]['bootstrap']['resamples'] for a in compute_optimal.APPROACHES] == [12, 12, 12]
    one = report['approach1']
    assert one['formula'] == fit.law['approach1'].law.describe() and one['params'] == fit.law['approach1'].law.params()
    assert one['runs'] == len(rows) - 1  # the failed run's curve left out
    assert one['C_range'][0] > 0 and min(c.C[0] for c in compute_optimal.curves(rows, tmp_path / 'points',
                                                                                 'loss')) > 0
    train = compute_optimal.curves(rows, tmp_path / 'points', 'loss')
    evals = compute_optimal.curves(rows, tmp_path / 'points', 'eval_loss')
    assert [len(c.C) for c in train][:2] == [10, 10] and [len(c.C) for c in evals][:2] == [8, 8]
    # the envelope's C by hand: 6 N D(t) at each run's last evaluation, step 96 of 100 (8 evaluations)
    finals = sorted(0.96 * 6 * r['N'] * r['D'] for r in rows[1:])
    assert one['C_range'][-1] == pytest.approx(finals[-1], rel=1e-9)
    seeded = compute_optimal.fit(rows, data, tmp_path / 'points', bootstrap=12, level=0.8, seed=0)
    other = compute_optimal.fit(rows, data, tmp_path / 'points', bootstrap=12, level=0.8, seed=1)
    for approach in compute_optimal.APPROACHES:
        assert seeded.report[approach]['bootstrap'] == report[approach]['bootstrap']  # the default seed is 0
        assert other.report[approach]['bootstrap'] != report[approach]['bootstrap']
    given = compute_optimal.fit(rows, data, tmp_path / 'points', bootstrap=0, budgets=list(budgets[1:]))
    assert len(given.report['approach2']['budgets']) == 3  # budget options reach Approach 2


def test_the_prediction_by_hand(tmp_path):
    """N_opt: the geometric mean of the three approaches' N_opt; its loss from Approach 3, the
    fit's log-residual scatter with 5 parameters, and the interval: each bootstrap law's
    prediction 50 times, times exp(Normal(0, scatter)) drawn from the seed, its central level."""
    budgets = np.geomspace(1e18, 1e20, 4)
    rows = fake_sweep(tmp_path, TRUTH, budgets, noise=0.01)
    data = results.table(rows)
    fit = compute_optimal.fit(rows, data, tmp_path / 'points', bootstrap=10, level=0.8, seed=3)
    p = fit.report['prediction']
    each = {a: float(fit.law[a].law.optimal_allocation(p['C'])[0]) for a in compute_optimal.APPROACHES}
    assert p['N_opt_by_approach'] == pytest.approx(each)
    assert p['N_opt'] == pytest.approx(math.prod(each.values()) ** (1 / 3))
    three = fit.law['approach3']
    residuals = np.log(data['loss']) - np.log(three.law.predict(data['N'], data['D']))
    sigma = math.sqrt(np.sum(residuals ** 2) / (len(residuals) - 5))
    assert p['residual_scatter_log'] == pytest.approx(sigma) and p['loss'] == pytest.approx(
        float(three.law.predict(p['N_opt'], p['D_opt'])))
    rng = np.random.default_rng(3)
    draws = np.repeat([law.predict(p['N_opt'], p['D_opt']) for law in three.laws], 50)
    draws = draws * np.exp(rng.normal(0.0, sigma, size=len(draws)))
    assert (p['loss_lo'], p['loss_hi']) == pytest.approx(scaling.central_interval(draws, 0.8))
    assert p['level'] == 0.8 and p['rule'] == ('N_opt: geometric mean of the three approaches at C; D_opt = C / 6 '
                                               'N_opt; loss: Approach 3, interval = bootstrap laws + residual scatter')
    mostly = compute_optimal.predict(fit.law, p['C'], {**data, 'loss': data['loss']}, 0.8, 3)
    assert mostly['warnings'] == compute_optimal.mostly_e(three.law.E, mostly['loss'], data['C'])
