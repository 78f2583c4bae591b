"""Reading learning-rate sweeps: parabola optima, edge flags, seeds' standard errors,
'wider is better', and Wortsman et al.'s LR sensitivity, each against a hand computation."""
import math

import numpy as np
import pytest

from scalelab.sweep import lr_laws

LRS = [10 ** (e / 2) for e in range(-7, 0)]  # 7 points, half a decade apart


def bowl(lr, best_log10, floor, curvature=0.4):
    return floor + curvature * (math.log10(lr) - best_log10) ** 2


def rows(param, width, seed, best_log10, floor):
    return [{'status': 'completed', 'model.parametrization': param, 'model.d_model': str(width), 'seed': str(seed),
             'optim.learning_rate': str(lr), 'loss': str(bowl(lr, best_log10, floor))} for lr in LRS]


def test_parabola_vertex_is_exact_for_a_parabola_off_the_grid():
    log_lrs = np.log10(LRS)
    optimum, at_edge = lr_laws.parabola_optimum(log_lrs, np.array([bowl(lr, -2.3, 2.0) for lr in LRS]))
    assert optimum == pytest.approx(-2.3, abs=1e-9) and not at_edge


def test_an_optimum_at_the_grid_edge_is_flagged():
    log_lrs = np.log10(LRS)
    falling = np.array([bowl(lr, 0.0, 2.0) for lr in LRS])  # still falling at the largest rate
    optimum, at_edge = lr_laws.parabola_optimum(log_lrs, falling)
    assert at_edge and optimum == pytest.approx(log_lrs[-1])
    rising = np.array([bowl(lr, -5.0, 2.0) for lr in LRS])
    assert lr_laws.parabola_optimum(log_lrs, rising) == (pytest.approx(log_lrs[0]), True)


def test_transfer_report_averages_seeds_and_gives_their_standard_error():
    table = []
    seed_optima = {0: -2.1, 1: -2.0, 2: -1.9}
    for width, floor in ((64, 2.5), (256, 2.2)):
        for seed, best in seed_optima.items():
            table += rows('mup', width, seed, best + (0.1 if width == 256 else 0.0), floor)
    report = lr_laws.lr_transfer(table)
    curve = report['curves']['mup']
    narrow, wide = curve['widths']['64'], curve['widths']['256']
    # the mean of three parabolas with equal curvature is a parabola centred on the mean optimum
    assert narrow['log10_best_lr'] == pytest.approx(-2.0, abs=1e-9)
    assert wide['log10_best_lr'] == pytest.approx(-1.9, abs=1e-9)
    assert curve['best_lr_shift_decades'] == pytest.approx(0.1, abs=1e-9)
    assert narrow['se_decades'] == pytest.approx(np.std([-2.1, -2.0, -1.9], ddof=1) / math.sqrt(3))
    assert narrow['seed_optima_log10'] == pytest.approx([-2.1, -2.0, -1.9])
    # checked within half a decade of the widths' mean optimum, -1.95: 10^-2 and 10^-1.5
    assert curve['wider_is_better']['holds']
    assert curve['wider_is_better']['learning_rates'] == pytest.approx([10 ** -2, 10 ** -1.5])
    assert report['law'] == 'lr_transfer' and report['rows'] == len(table) and 'parabola' in report['formula']
    assert narrow['seeds'] == 3 and narrow['best_lr'] == pytest.approx(10 ** -2.0) and narrow['at_edge'] is False
    assert curve['best_lr_range_decades'] == pytest.approx(0.1, abs=1e-9) and curve['any_at_edge'] is False
    # each point: (lr, the seeds' mean loss, its standard error std(ddof=1) / sqrt(3)), by hand
    for lr, mean, se in narrow['points']:
        losses = [bowl(lr, best, 2.5) for best in seed_optima.values()]
        assert (mean, se) == pytest.approx((np.mean(losses), np.std(losses, ddof=1) / math.sqrt(3)), rel=1e-9)
    one_seed = lr_laws.lr_transfer(rows('mup', 64, 0, -2.0, 2.0))['curves']['mup']['widths']['64']
    assert one_seed['se_decades'] is None and [p[2] for p in one_seed['points']] == [0.0] * len(LRS)


def test_wider_is_better_names_the_widths_that_break_it():
    table = rows('standard', 64, 0, -2.0, 2.2) + rows('standard', 128, 0, -2.0, 2.3) + rows('standard', 256, 0, -2.0, 2.1)
    check = lr_laws.lr_transfer(table)['curves']['standard']['wider_is_better']
    assert not check['holds']
    assert {(v['narrower'], v['wider']) for v in check['violations']} == {('64', '128')}


def test_unfinished_runs_leave_their_learning_rate_out_of_the_mean():
    table = rows('mup', 64, 0, -2.0, 2.0) + rows('mup', 64, 1, -2.0, 2.0)
    table[-1]['status'] = 'diverged'  # seed 1 at the largest rate
    points = lr_laws.lr_transfer(table)['curves']['mup']['widths']['64']['points']
    assert math.isnan(points[-1][1]) and math.isfinite(points[-2][1])


def test_lr_sensitivity_by_hand():
    """Losses 3.0, 2.5, 2.0, 2.4, and one diverged run, initial loss 5.0: the capped losses are
    3.0, 2.5, 2.0, 2.4, 5.0; their mean 2.98 minus the best 2.0 is 0.98."""
    losses = [3.0, 2.5, 2.0, 2.4, None]
    table = [{'status': 'completed' if loss else 'diverged', 'model.d_model': '64', 'model.qk_norm': 'False',
              'optim.learning_rate': str(lr), 'loss': '' if loss is None else str(loss), 'uniform_loss': '5.0',
              'attn_logit_max': str(10 * i)} for i, (lr, loss) in enumerate(zip([1e-3, 1e-2, 1e-1, 1e0, 1e1], losses))]
    table.append({**table[0], 'loss': '7.5'})  # a finished run worse than the initial loss counts as it
    table[-1]['optim.learning_rate'] = '1e-4'
    report = lr_laws.lr_sensitivity(table)
    entry = report['variants']['qk_norm=False']['64']
    assert entry['lr_sensitivity'] == pytest.approx((3.0 + 2.5 + 2.0 + 2.4 + 5.0 + 5.0) / 6 - 2.0)
    assert entry['best_lr'] == 1e-1 and entry['diverged_lrs'] == [10.0]
    assert [p[2] for p in entry['points']] == [0.0, 0.0, 10.0, 20.0, 30.0, 40.0]
    assert entry['best_loss'] == 2.0 and report['law'] == 'lr_sensitivity' and report['rows'] == len(table)
    failed = [{**r, 'status': 'failed'} if r['optim.learning_rate'] == '0.01' else r for r in table]
    entry = lr_laws.lr_sensitivity(failed)['variants']['qk_norm=False']['64']  # a failed run counts as diverged
    assert entry['diverged_lrs'] == [0.01, 10.0]
    plain = [{k: v for k, v in r.items() if k != 'model.qk_norm'} for r in table]
    assert list(lr_laws.lr_sensitivity(plain)['variants']) == ['all']
    nested = [{**r, 'model.attention.kind': 'mha'} for r in table]  # a variant is named by its key's last part
    assert list(lr_laws.lr_sensitivity(nested)['variants']) == ['kind=mha, qk_norm=False']
    with pytest.raises(ValueError, match='the table has no optim.learning_rate column'):
        lr_laws.lr_transfer([{k: v for k, v in r.items() if k != 'optim.learning_rate'} for r in rows('mup', 64, 0, -2.0, 2.0)])


def test_fit_command_reads_a_transfer_table_and_draws_it(tmp_path):
    import csv
    import json
    import subprocess
    import sys

    from tests.helpers import REPO
    table = []
    for param, drift in (('standard', -0.5), ('mup', 0.0)):
        for width, floor in ((64, 2.5), (128, 2.4), (256, 2.3)):
            for seed in range(2):
                table += rows(param, width, seed, -2.0 + drift * (width / 64 - 1) / 3 + 0.02 * seed, floor)
    path = tmp_path / 'lr.csv'
    with path.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    out = subprocess.run([sys.executable, '-m', 'scalelab.sweep', 'fit', '--results', str(path), '--law',
                          'lr_transfer', '--out', str(tmp_path / 'fit')], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / 'fit' / 'fit.json').read_text())
    assert report['curves']['mup']['best_lr_shift_decades'] == pytest.approx(0.0, abs=1e-9)
    assert report['curves']['standard']['best_lr_shift_decades'] == pytest.approx(-0.5, abs=1e-9)
    assert 'moves -0.50 decades' in out.stdout and (tmp_path / 'fit' / 'scaling.png').stat().st_size > 10_000


def test_the_shipped_transfer_experiment_meets_the_bar_it_reports(monkeypatch):
    """experiments/mup_lr_transfer.py:long_qk_norm, the README's headline: at least 4 widths
    over at least 8x, both parametrizations, 3 or more seeds, 7 or more learning rates at most
    half a decade apart, and no gradient clipping (its effect would depend on width), read
    from the run configs its points resolve to."""
    from scalelab.sweep import points
    from tests.helpers import REPO
    monkeypatch.chdir(REPO)
    runs = [p.config for p in points.expand(points.load_experiment('experiments/mup_lr_transfer.py:long_qk_norm'), 1)]
    widths = sorted({c.model.d_model for c in runs})
    log_lrs = np.log10(sorted({c.optim.learning_rate for c in runs}))
    assert len(widths) >= 4 and widths[-1] / widths[0] >= 8
    assert {c.model.parametrization for c in runs} == {'standard', 'mup'} and len({c.seed for c in runs}) >= 3
    assert len(log_lrs) >= 7 and np.diff(log_lrs).max() <= 0.5 + 1e-6
    assert all(c.optim.grad_clip == 0.0 and c.model.qk_norm and c.model.mup_base_width in widths for c in runs)
    assert len(runs) == len(widths) * 2 * len(log_lrs) * len({c.seed for c in runs})


@pytest.mark.parametrize('name', ['mup_lr_transfer_long_qk_norm', 'mup_lr_transfer_long_qk_norm_256'])
def test_committed_transfer_fit_is_the_fit_of_its_committed_table(name):
    """benchmarks/results/<name>: fit.json is what lr_transfer makes of results.csv beside it,
    so the README's numbers trace back to the runs."""
    import csv
    import json

    from tests.helpers import REPO
    folder = REPO / 'benchmarks' / 'results' / name
    with (folder / 'results.csv').open() as f:
        table = list(csv.DictReader(f))
    refit, committed = lr_laws.lr_transfer(table), json.loads((folder / 'fit.json').read_text())
    for param, curve in committed['curves'].items():
        assert refit['curves'][param]['best_lr_shift_decades'] == pytest.approx(curve['best_lr_shift_decades'])
        assert refit['curves'][param]['wider_is_better'] == curve['wider_is_better']
        for width, fit in curve['widths'].items():
            assert refit['curves'][param]['widths'][width]['log10_best_lr'] == pytest.approx(fit['log10_best_lr'])


@pytest.mark.parametrize('losses, expected', [
    # three points, best in the middle: the parabola through them, its vertex by hand
    ([2.0, 1.0, 2.0], (1.0, False)),
    ([3.0, 1.0, 2.0], (1.0 + 0.5 * (3.0 - 2.0) / (3.0 - 2 * 1.0 + 2.0), False)),
    # the three points around the best only: 1.5 and 1.6 pull the fit if the window slips
    ([1.5, 1.6, 1.1, 1.0, 1.2], (3.0 + 0.5 * (1.1 - 1.2) / (1.1 - 2 * 1.0 + 1.2), False)),
    ([1.2, 1.0, 1.1, 1.6, 1.5], (1.0 + 0.5 * (1.2 - 1.1) / (1.2 - 2 * 1.0 + 1.1), False)),
    # best at an edge, or too few points: the grid's best, flagged
    ([1.0, 2.0, 3.0], (0.0, True)), ([3.0, 2.0, 1.0], (2.0, True)), ([2.0, 1.0], (1.0, True)),
    # at an edge even though a parabola through the last three would put its vertex inside them
    ([1.0, 0.5, 0.4], (2.0, True)), ([0.4, 0.5, 1.0], (0.0, True)),
    ([float('nan'), 2.0, 1.0, 2.0], (2.0, False)),       # a diverged run is left out, its lr with it
    ([float('nan')] * 3, (float('nan'), True)),
])
def test_the_parabola_vertex_by_hand(losses, expected):
    """Grid log10 lr = 0, 1, 2, ...; the vertex of the parabola through (x-1, y0), (x, y1),
    (x+1, y2) lies at x + (y0 - y2) / (2 (y0 - 2 y1 + y2))."""
    log_lrs = np.arange(len(losses), dtype=float)
    optimum, at_edge = lr_laws.parabola_optimum(log_lrs, np.array(losses))
    assert at_edge == expected[1]
    if math.isnan(expected[0]):
        assert math.isnan(optimum)
    else:
        assert optimum == pytest.approx(expected[0], abs=1e-9)


def test_wider_is_better_checks_every_step_up_at_every_rate_near_the_optimum():
    """Three widths, optimum exactly -2.0: the rates 0.5 decades either side are checked too;
    a tie is no improvement; every violation is kept; a rate one width lacks is not checked."""
    table = rows('standard', 64, 0, -2.0, 2.2) + rows('standard', 128, 0, -2.0, 2.1) + rows('standard', 256, 0, -2.0, 2.1)
    table = [r for r in table if not (r['model.d_model'] == '128' and float(r['optim.learning_rate']) == LRS[2])]
    check = lr_laws.lr_transfer(table)['curves']['standard']['wider_is_better']
    assert check['learning_rates'] == pytest.approx([10 ** -2.0, 10 ** -1.5])  # 10^-2.5: width 128 lacks it
    assert not check['holds']
    assert [(v['lr'], v['narrower'], v['wider']) for v in check['violations']] == [
        (pytest.approx(10 ** -2.0), '128', '256'), (pytest.approx(10 ** -1.5), '128', '256')]


def test_the_laws_name_what_they_are_and_what_they_miss():
    with pytest.raises(ValueError, match=r'the table has no model.d_model or optim.learning_rate column: a '
                                         r'learning-rate law needs model.d_model and optim.learning_rate as sweep axes'):
        lr_laws.lr_transfer([{'loss': '1.0', 'status': 'completed'}])
    with pytest.raises(ValueError, match=r"lr_transfer: no completed rows with a finite 'loss' and columns "
                                         r'model.parametrization, model.d_model, optim.learning_rate'):
        lr_laws.lr_transfer([{**r, 'status': 'failed'} for r in rows('mup', 64, 0, -2.0, 2.0)])
    with pytest.raises(ValueError, match=r'lr_sensitivity: no rows with columns model.d_model and optim.learning_rate'):
        lr_laws.lr_sensitivity([])
    assert lr_laws.lr_transfer(rows('mup', 64, 0, -2.0, 2.0))['formula'] == (
        'best learning rate per width: vertex of a parabola in log10(lr) fitted to the seed-averaged loss')
    table = [{**r, 'uniform_loss': '5.0', 'model.qk_norm': 'True', 'optim.warmup': '10'}
             for r in rows('mup', 64, 0, -2.0, 2.0)]
    report = lr_laws.lr_sensitivity(table)
    assert report['formula'] == ('LR sensitivity = mean over lr of min(loss, initial loss) - min over lr of loss '
                                 '(Wortsman et al. 2023)')
    assert list(report['variants']) == ['parametrization=mup, qk_norm=True, warmup=10']


def test_two_seeds_have_a_standard_error_and_a_table_without_groups_is_one_curve():
    table = rows('mup', 64, 0, -2.1, 2.5) + rows('mup', 64, 1, -1.8, 2.5)
    widths = lr_laws.lr_transfer(table)['curves']['mup']['widths']
    assert widths['64']['se_decades'] == pytest.approx(np.std([-2.1, -1.8], ddof=1) / math.sqrt(2))
    assert all(se > 0 for _, _, se in widths['64']['points'])  # two seeds differ at every rate
    plain = [{k: v for k, v in r.items() if k != 'model.parametrization'} for r in table]
    assert list(lr_laws.lr_transfer(plain)['curves']) == ['all']
