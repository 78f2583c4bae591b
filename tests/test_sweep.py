"""Sweeps: expansion, commands, result tables, and a tiny sweep killed and re-run."""
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scalelab.core.errors import ConfigError
from scalelab.science import flops
from scalelab.sweep import results
from scalelab import data as data_lib
from scalelab.sweep import points as points_lib
from tests.helpers import REPO, TEST_CACHE

TINY = 'experiments/sweep_lm_params.py:tiny'
ENV = {**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)}


def sweep_cli(*args, **kwargs):
    return subprocess.run([sys.executable, '-m', 'scalelab.sweep', *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, **kwargs)


def tiny_sweep():
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return points_lib.load_experiment(TINY)
    finally:
        os.chdir(cwd)


def test_expansion_crosses_axes_and_solves_shapes(monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = tiny_sweep()
    sweep.axes['seed'] = (0, 1)
    sweep.axes['tokens_per_param'] = (2.0,)
    del sweep.axes['train.tokens']
    points = points_lib.expand(sweep, num_devices=1)
    assert len(points) == 6  # 3 sizes x 2 seeds
    assert len({p.name for p in points}) == 6
    for p in points:
        n = points_lib.count(p.plan, 'non_embedding')
        assert abs(n / p.axes['target_params'] - 1) <= 0.05
        assert p.config.train.tokens == pytest.approx(2.0 * n, abs=1)
        assert p.config.seed == p.axes['seed']
        assert p.overrides['model.d_model'] == p.config.model.d_model


def test_bad_sweep_axes_are_named(monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = tiny_sweep()
    sweep.axes['optim.learning_rat'] = (1e-3,)
    with pytest.raises(ConfigError, match=r'optim\.learning_rat: unknown key; valid keys under optim: .*learning_rate'):
        points_lib.expand(sweep, num_devices=1)
    sweep = tiny_sweep()
    sweep.axes['target_params'] = (10.0,)
    with pytest.raises(ConfigError, match=r'axes\.target_params: target_params=10: no transformer'):
        points_lib.expand(sweep, num_devices=1)


def test_dry_run_and_emitted_commands(tmp_path):
    dry = sweep_cli('--config', TINY, f'--workdir={tmp_path}', '--dry-run')
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith('3 points (N = with_head parameters, the count the fit uses; C = 6 N D')
    rows = [line.split() for line in dry.stdout.splitlines() if line.startswith('p0')]
    sweep = tiny_sweep()
    total = 0.0
    for row, point in zip(rows, points_lib.expand(sweep, num_devices=1)):
        n = points_lib.count(point.plan, 'with_head')  # the N column is the N of C = 6 N D (the head counted)
        assert n == flops.param_counts(point.config.model, spec := data_lib.spec(point.config.data))['non_embedding'] \
            + point.config.model.d_model * spec.num_outputs
        tokens = point.config.train.steps * point.config.train.global_batch * point.config.data.seq_len
        assert row[3] == f'{n:,}' and row[4] == f'{tokens:.3g}' and row[6] == f'{6 * n * tokens:.3g}'
        total += 6 * n * tokens
    assert f'total {total:.3g} FLOPs' in dry.stdout
    assert not (tmp_path / 'points').exists()  # nothing trained
    emitted = sweep_cli('--config', TINY, f'--workdir={tmp_path}', '--emit-commands')
    lines = emitted.stdout.strip().splitlines()
    assert len(lines) == 3
    argv = shlex.split(lines[2])
    assert argv[:4] == ['python', '-m', 'scalelab.run', '--config']
    assert f'--workdir={tmp_path}/points/p02-N49.4k-tokens16k' in argv
    assert '--config.model.d_model=32' in argv and '--config.model.n_layers=4' in argv


def test_table_filters_and_derives_columns(tmp_path):
    path = tmp_path / 'runs.csv'
    with path.open('w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['params', 'FLOPs', 'final_loss', 'status'])
        w.writerow([1e6, 6e12, 3.0, 'completed'])
        w.writerow([2e6, 1.2e13, 2.8, 'completed'])
        w.writerow([4e6, 2.4e13, 9.9, 'completed'])   # an outlier
        w.writerow([8e6, 4.8e13, 2.5, 'diverged'])
        w.writerow([16e6, 9.6e13, '', 'completed'])   # no loss
    data = results.table(results.read_csv(path), n_col='params', c_col='FLOPs', loss_col='final_loss',
                         drop_top_loss=1)
    np.testing.assert_array_equal(data['N'], [1e6, 2e6])
    np.testing.assert_allclose(data['D'], [1e6, 1e6])  # C / 6N
    with pytest.raises(ValueError, match=r"no column 'N'; columns are params, FLOPs, final_loss, status"):
        results.table(results.read_csv(path))


def test_fit_command_refits_a_foreign_csv(tmp_path):
    N = np.geomspace(1e5, 1e9, 10)
    loss = 2.0 + 30.0 * N ** -0.25
    path = tmp_path / 'foreign.csv'
    path.write_text('model_size,val_loss\n' + ''.join(f'{n},{l}\n' for n, l in zip(N, loss)))
    done = sweep_cli('fit', f'--results={path}', '--n_col=model_size', '--loss_col=val_loss', '--law=power',
                     '--bootstrap=50', f'--out={tmp_path}')
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / 'fit.json').read_text())
    assert report['params']['alpha'] == pytest.approx(0.25, abs=0.005)
    assert report['holdout_largest']['relative_error'] == pytest.approx(0.0, abs=0.005)
    assert 'largest N=1e+09 held out' in done.stdout
    assert (tmp_path / 'scaling.png').exists()


@pytest.mark.slow
def test_tiny_sweep_killed_midway_resumes_and_skips_finished_points(tmp_path):
    workdir = tmp_path / 'sweep'
    first = workdir / 'points' / 'p00-N6.2k-tokens16k'
    proc = subprocess.Popen([sys.executable, '-m', 'scalelab.sweep', '--config', TINY, f'--workdir={workdir}'],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not (first / 'summary.json').exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, 'first point did not finish in time'
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its running point, at once
    proc.wait(timeout=30)
    assert not (workdir / 'results.csv').exists(), 'the sweep finished before it was killed'
    first_summary = (first / 'summary.json').read_text()
    first_mtime = (first / 'summary.json').stat().st_mtime_ns

    done = sweep_cli('--config', TINY, f'--workdir={workdir}', '--parallel=2', timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'skip p00-N6.2k-tokens16k: finished earlier' in done.stdout
    assert 'start p00' not in done.stdout and 'start p01' in done.stdout and 'start p02' in done.stdout
    assert (first / 'summary.json').stat().st_mtime_ns == first_mtime
    assert (first / 'summary.json').read_text() == first_summary
    rows = results.read_csv(workdir / 'results.csv')
    assert [r['status'] for r in rows] == ['completed'] * 3
    losses = [float(r['loss']) for r in rows]
    assert losses[0] > losses[1] > losses[2]  # bigger models, lower loss, even after 32 steps
    assert json.loads((workdir / 'fit.json').read_text())['law'] == 'power'
    assert (workdir / 'scaling.png').exists()


def test_isoflop_on_a_sweeps_own_table_recovers_the_true_exponent(tmp_path):
    """Points of real transformer shapes, each 'trained' on D = C / 6N tokens for budgets C,
    with the loss of a known Chinchilla law in (N with the head, D). The table results.collect
    writes from their summaries (the counted FLOPs, attention included, differ from 6ND by
    1-12% across these sizes) must give back the law's N_opt exponent within 0.02."""
    from scalelab.science import flops, scaling
    from scalelab.training import plan
    from tests.helpers import tiny_lm
    truth = scaling.Chinchilla(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.28)
    a_true = truth.beta / (truth.alpha + truth.beta)  # N_opt ∝ C^a_true
    sweep = points_lib.default_config()
    shapes = [(d, layers) for d in (16, 24, 32, 48, 64, 96, 128, 192, 256) for layers in (2, 4)]
    points = []
    for budget, n_center in enumerate(np.geomspace(4e4, 4e5, 4)):
        C = 6 * (n_center / truth.G) ** (1 / a_true)  # the budget whose optimum is n_center
        for d_model, n_layers in shapes:
            cfg = tiny_lm(**{'model.d_model': d_model, 'model.n_layers': n_layers, 'model.n_heads': d_model // 8,
                             'model.d_ff': 4 * d_model})
            point = points_lib.Point(f'b{budget}-d{d_model}-l{n_layers}', {}, {}, plan.make(cfg, 8))
            n = points_lib.count(point.plan, 'with_head')
            if not 0.2 < n / n_center < 5:
                continue
            tokens = C / (6 * n)
            counted_per_token = point.plan.flops_per_step / point.plan.tokens_per_step
            summary = {'status': 'completed', 'params': {'total': n, 'embedding': 0}, 'tokens': tokens,
                       'flops': counted_per_token * tokens, 'eval_loss': float(truth.predict(n, tokens))}
            (tmp_path / 'points' / point.name).mkdir(parents=True)
            (tmp_path / 'points' / point.name / 'summary.json').write_text(json.dumps(summary))
            points.append(point)
    rows = results.collect(sweep, points, tmp_path)
    ratios = [float(r['C_counted']) / float(r['C']) for r in rows]
    assert max(ratios) / min(ratios) > 1.08  # counted FLOPs / 6ND varies with the size: the convention matters
    assert {r['flop_convention'] for r in rows} == {flops.FLOP_CONVENTION}
    fit = results.fit_table(results.table(rows), 'isoflop', bootstrap=0)
    assert len(fit.law.budgets) == 4
    assert fit.law.a == pytest.approx(a_true, abs=0.02)
    assert fit.law.b == pytest.approx(1 - a_true, abs=0.02)


def test_fit_writes_beside_a_sweep_and_elsewhere_never_into_the_tables_directory(tmp_path):
    from scalelab.sweep.cli import default_out
    (tmp_path / 'sweep' / 'points').mkdir(parents=True)
    assert default_out(tmp_path / 'sweep' / 'results.csv') == tmp_path / 'sweep'
    assert str(default_out(REPO / 'experiments' / 'data' / 'chinchilla_svg_extracted_data.csv')) == \
        'runs/fit/chinchilla_svg_extracted_data'
    done = sweep_cli('fit', '--results=no/such.csv')
    assert done.returncode == 2 and done.stderr.strip() == 'error: --results=no/such.csv: no such file'
