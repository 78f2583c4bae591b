"""The task law (Bhagia et al.'s two steps), checked on tables drawn from known laws: it
recovers them, predicts a held-out run inside its interval, and says when accuracy is noise."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from scalelab.science import scaling, task_law
from scalelab.sweep import task_fit
from tests.helpers import REPO

TRUE_LOSS = scaling.Chinchilla(E=0.9, A=40.0, B=300.0, alpha=0.3, beta=0.35)
TRUE_SIGMOID = task_law.Sigmoid(a=0.6, k=-4.0, L0=1.4, b=0.25)
TASK = 'toy:rc_0shot'


def known_rows(noise_bpb=0.004, noise_acc=0.004, seed=0, sigmoid=TRUE_SIGMOID, docs=20000):
    """A sweep of 4 budgets x 6 sizes drawn from the known two steps, plus one run at 10x."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in (1e16, 3e16, 1e17, 3e17):
        for N in np.geomspace(2e6, 1e8, 6) * (C / 1e17) ** 0.5:
            rows.append((N, C / (6 * N)))
    rows.append((TRUE_LOSS.optimal_allocation(3e18)))
    out = []
    for i, (N, D) in enumerate(rows):
        bpb = TRUE_LOSS.predict(N, D) * (1 + noise_bpb * rng.standard_normal())
        acc = float(np.clip(sigmoid.predict(bpb) + noise_acc * rng.standard_normal(), 0, 1))
        out.append({'name': f'p{i:02d}', 'status': 'completed', 'N': N, 'D': D, 'C': 6 * N * D,
                    f'downstream/{TASK}/bpb': bpb, f'downstream/{TASK}/acc': acc, f'downstream/{TASK}/n': docs})
    return out


def fit_rows(rows, **options):
    return task_fit.fit(task_fit.table(rows, TASK, 'acc', []), TASK, **options)


def test_the_sigmoid_is_recovered_from_noise_free_points():
    bpb = np.linspace(0.9, 2.2, 12)
    found = task_law.fit_sigmoid(bpb, TRUE_SIGMOID.predict(bpb))
    assert found.params() == pytest.approx(TRUE_SIGMOID.params(), rel=1e-4)
    assert found.at_bounds == ()


def test_both_steps_recover_the_known_law_and_predict_the_held_out_run():
    fit = fit_rows(known_rows(), bootstrap=40)
    params = fit.report['params']
    assert params['alpha'] == pytest.approx(0.3, abs=0.05) and params['beta'] == pytest.approx(0.35, abs=0.05)
    for name, value in TRUE_SIGMOID.params().items():
        assert params[f'sigmoid_{name}'] == pytest.approx(value, rel=0.15, abs=0.03)
    held = fit.report['holdout_largest']
    truth_bpb = TRUE_LOSS.predict(held['N'], held['D'])
    assert held['C'] == pytest.approx(3e18, rel=1e-9)  # the largest compute is the one held out
    assert held['bpb_inside'] and held['acc_inside']
    assert held['predicted_bpb'] == pytest.approx(truth_bpb, rel=0.02)
    assert held['predicted_acc'] == pytest.approx(TRUE_SIGMOID.predict(truth_bpb), abs=0.02)
    assert held['acc_lo'] < held['predicted_acc'] < held['acc_hi']
    assert fit.report['warnings'] == []


def test_accuracy_at_chance_is_said_to_be_noise():
    """The trend test's false alarms stay near its 5% level on accuracy at chance, and it
    never misses the known sigmoid's trend; the warning reaches fit.json."""
    chance = task_law.Sigmoid(a=0.0, k=-1.0, L0=1.0, b=0.25)  # a code model on a 4-way English task

    def warned(rows):
        bpb = np.array([r[f'downstream/{TASK}/bpb'] for r in rows])
        acc = np.array([r[f'downstream/{TASK}/acc'] for r in rows])
        return bool(task_fit.noise_warnings(bpb, acc, 'acc'))
    at_chance = [warned(known_rows(noise_acc=0.01, sigmoid=chance, seed=seed)) for seed in range(100)]
    assert 0.85 <= np.mean(at_chance) < 1.0  # a one-sided 5% test: about 95 of 100 warned
    assert not any(warned(known_rows(noise_acc=0.01, seed=seed)) for seed in range(20))
    seed = at_chance.index(True)
    fit = fit_rows(known_rows(noise_acc=0.01, sigmoid=chance, seed=seed), bootstrap=0)
    noise = [w for w in fit.report['warnings'] if 'fitted to noise' in w]
    assert len(noise) == 1 and 'no significant trend with bpb' in noise[0]


def test_the_binomial_standard_error():
    assert task_law.binomial_se(0.25, 1000) == pytest.approx((0.25 * 0.75 / 1000) ** 0.5, rel=1e-12)


def write_csv(rows, path):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_sweep(*args):
    return subprocess.run([sys.executable, '-m', 'scalelab.sweep', *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_the_cli_fits_the_task_law_draws_it_and_refuses_a_missing_task(tmp_path):
    table = write_csv(known_rows(), tmp_path / 'results.csv')
    done = run_sweep('fit', '--results', str(table), '--law', 'task', '--task', TASK, '--bootstrap', '8',
                     '--out', str(tmp_path / 'fit'))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / 'fit' / 'fit.json').read_text())
    assert report['task'] == TASK and report['metric'] == 'acc'
    direct = fit_rows(known_rows(), bootstrap=8)
    assert report['holdout_largest']['predicted_bpb'] == pytest.approx(
        direct.report['holdout_largest']['predicted_bpb'], rel=1e-9)
    assert 'bpb     predicted' in done.stdout and (tmp_path / 'fit' / 'scaling.png').stat().st_size > 10000
    done = run_sweep('fit', '--results', str(table), '--law', 'task', '--out', str(tmp_path / 'x'))
    assert done.returncode == 2 and '--law task needs --task' in done.stderr
    done = run_sweep('fit', '--results', str(table), '--law', 'task', '--task', 'hellaswag:rc_0shot',
                     '--out', str(tmp_path / 'x'))
    assert done.returncode == 2 and "its tasks: toy:rc_0shot" in done.stderr
    assert not (tmp_path / 'x').exists()


def test_a_sweeps_table_carries_the_points_task_metrics_into_the_fit(tmp_path):
    """Summaries holding downstream/ keys (as the in-loop action writes them) become results.csv
    columns that the task law fits: the law's own numbers come back through collect."""
    from scalelab.sweep import points as points_lib
    from scalelab.sweep import results
    from scalelab.training import plan
    from tests.helpers import tiny_lm
    points = []
    for d_model in (16, 24, 32, 48, 64, 96, 128):
        for tokens in (2e6, 2e7):
            cfg = tiny_lm(**{'model.d_model': d_model, 'model.n_heads': d_model // 8, 'model.d_ff': 4 * d_model})
            point = points_lib.Point(f'd{d_model}-t{tokens:.0e}', {}, {}, plan.make(cfg, 8))
            n = points_lib.count(point.plan, 'with_head')
            bpb = float(TRUE_LOSS.predict(n, tokens))
            summary = {'status': 'completed', 'params': {'total': n, 'embedding': 0}, 'tokens': tokens,
                       'eval_loss': 2.0, f'downstream/{TASK}/bpb': bpb, f'downstream/{TASK}/n': 500,
                       f'downstream/{TASK}/acc': float(TRUE_SIGMOID.predict(bpb))}
            (tmp_path / 'points' / point.name).mkdir(parents=True)
            (tmp_path / 'points' / point.name / 'summary.json').write_text(json.dumps(summary))
            points.append(point)
    rows = results.collect(points_lib.default_config(), points, tmp_path)
    assert [float(r[f'downstream/{TASK}/n']) for r in rows] == [500.0] * len(points)
    fit = fit_rows(rows, bootstrap=0)
    assert fit.report['rows'] == len(points)
    held = fit.report['holdout_largest']
    assert held['predicted_bpb'] == pytest.approx(held['measured_bpb'], rel=1e-3)
