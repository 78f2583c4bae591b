"""Compute multipliers between two recipes, against tables whose multiplier is known."""
import json
import subprocess
import sys

import numpy as np
import pytest

from scalelab.core import files
from scalelab.science import scaling
from scalelab.sweep import compare
from tests.helpers import REPO


def law(C):
    return 1.5 + 300.0 * np.asarray(C, float) ** -0.2


def write_table(path, C, bits_per_byte, tokenizer='bytes', bytes_per_token=1.0):
    """A sweep's table: loss in nats per token, bits_per_byte the comparable metric."""
    rows = [{'name': f'p{i}', 'status': 'completed', 'N': 1e5, 'C': c, 'bits_per_byte': b,
             'loss': b * np.log(2) * bytes_per_token, 'tokenizer': tokenizer} for i, (c, b) in enumerate(zip(C, bits_per_byte))]
    files.write_csv(path, rows, ['name', 'status', 'N', 'C', 'loss', 'bits_per_byte', 'tokenizer'])


def test_the_frontier_keeps_only_runs_no_cheaper_run_beats():
    C = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    loss = np.array([3.0, 3.5, 2.5, 2.5, 2.0])
    assert compare.frontier_points(C, loss).tolist() == [0, 2, 4]


def test_a_recipe_that_reaches_every_loss_with_a_third_of_the_compute_has_multiplier_three():
    rng = np.random.default_rng(0)
    C = np.geomspace(1e12, 1e15, 9)
    a = {'C': C, 'loss': law(C) * np.exp(rng.normal(0, 0.001, len(C)))}
    b = {'C': C, 'loss': law(3 * C) * np.exp(rng.normal(0, 0.001, len(C)))}  # B at C does what A does at 3C
    report, _ = compare.compare(a, b, bootstrap=50)
    assert report['warnings'] == []
    for level in report['levels']:
        assert level['multiplier'] == pytest.approx(3.0, rel=0.1)
        assert level['lo'] < 3.0 < level['hi'] or level['multiplier'] == pytest.approx(3.0, rel=0.03)
    # only where both reach: from the larger of the two minima to the smaller of the maxima
    assert report['levels'][0]['loss'] == pytest.approx(min(a['loss'].max(), b['loss'].max()))
    assert report['levels'][-1]['loss'] == pytest.approx(max(a['loss'].min(), b['loss'].min()))


def test_the_cli_compares_sweeps_and_refuses_per_token_losses_of_different_tokenizers(tmp_path):
    C = np.geomspace(1e12, 1e15, 8)
    write_table(tmp_path / 'a.csv', C, law(C))
    write_table(tmp_path / 'b.csv', C, law(2 * C), tokenizer='hf:bpe-4096:4096', bytes_per_token=3.3)
    args = [sys.executable, '-m', 'scalelab.sweep', 'compare', f'--a={tmp_path / "a.csv"}', f'--b={tmp_path / "b.csv"}',
            '--bootstrap=30', f'--out={tmp_path / "out"}']
    refused = subprocess.run(args + ['--metric=loss'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and not (tmp_path / 'out').exists()
    assert refused.stderr.strip() == ("error: --metric=loss: the tables' tokenizers differ (A: bytes; B: "
                                      'hf:bpe-4096:4096), so a loss per token does not compare; use --metric=bits_per_byte')
    done = subprocess.run(args + ['--metric=bits_per_byte'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / 'out' / 'compare.json').read_text())
    assert [round(lv['multiplier'], 2) for lv in report['levels']] == [2.0, 2.0, 2.0]
    assert "B's compute multiplier 2" in done.stdout
    assert (tmp_path / 'out' / 'compare.png').stat().st_size > 10_000


def test_tokenizer_mismatch_is_named_and_disjoint_losses_refused():
    bytes_rows = [{'tokenizer': 'bytes'}]
    bpe_rows = [{'tokenizer': 'hf:bpe-4096:4096'}]
    problem = compare.metric_problem(bytes_rows, bpe_rows, 'loss')
    assert problem.startswith("--metric=loss: the tables' tokenizers differ (A: bytes; B: hf:bpe-4096:4096)")
    assert compare.metric_problem(bytes_rows, bpe_rows, 'bits_per_byte') is None
    assert compare.metric_problem(bytes_rows, bytes_rows, 'loss') is None
    C = np.geomspace(1e12, 1e15, 6)
    with pytest.raises(ValueError, match='reach no common loss'):
        compare.compare({'C': C, 'loss': law(C)}, {'C': C, 'loss': law(C) - 1.0}, bootstrap=0)


def test_the_compute_a_frontier_needs_is_its_law_inverted_by_hand():
    """L = 1 + 10 / sqrt(C): loss 2 needs C = 100, loss 1.5 needs 400; at or below E, never."""
    frontier = compare.Frontier(np.ones(3), np.ones(3), scaling.PowerLaw(E=1.0, A=10.0, alpha=0.5))
    np.testing.assert_allclose(frontier.compute_for([2.0, 1.5, 1.0, 0.5]), [100.0, 400.0, np.nan, np.nan],
                               rtol=1e-12)
    with pytest.raises(ValueError, match=r'^compare: 2 runs on the compute frontier; a law L\(C\) = E \+ A '
                                         r'C\^-alpha needs 3$'):
        compare.fit_frontier([1e12, 1e13, 1e14], [3.0, 2.0, 2.5])
    problem = compare.metric_problem([{'tokenizer': 'bytes'}, {'tokenizer': 'hf:bpe-512:512'}],
                                     [{'tokenizer': 'hf:bpe-4096:4096'}, {'tokenizer': 'tiktoken:gpt2'}], 'loss')
    assert '(A: bytes, hf:bpe-512:512; B: hf:bpe-4096:4096, tiktoken:gpt2)' in problem


def test_the_report_holds_both_frontiers_and_each_level_s_central_interval():
    """Each level's C_A and C_B are the fitted frontiers inverted at its loss; its interval is
    the central `level` of the bootstrap multipliers, so the 50% interval lies inside the 90%."""
    rng = np.random.default_rng(1)
    C = np.geomspace(1e12, 1e15, 9)
    a = {'C': C, 'loss': law(C) * np.exp(rng.normal(0, 0.01, len(C)))}
    b = {'C': C, 'loss': law(2 * C) * np.exp(rng.normal(0, 0.01, len(C)))}
    wide, (fa, fb) = compare.compare(a, b, bootstrap=40, level=0.9)
    narrow, _ = compare.compare(a, b, bootstrap=40, level=0.5)
    assert (wide['level'], wide['resamples'], narrow['level']) == (0.9, 40, 0.5)
    for name, f in (('A', fa), ('B', fb)):
        frontier = wide['frontiers'][name]
        assert frontier['C'] == f.C.tolist() and frontier['loss'] == f.loss.tolist() and frontier['runs'] == len(f.C)
        assert frontier['params'] == f.law.params() and frontier['formula'] == f.law.describe('C')
    for w, n in zip(wide['levels'], narrow['levels']):
        assert w['C_A'] == pytest.approx(float(fa.compute_for(w['loss'])))
        assert w['C_B'] == pytest.approx(float(fb.compute_for(w['loss'])))
        assert w['multiplier'] == pytest.approx(w['C_A'] / w['C_B'])
        assert w['lo'] < n['lo'] < n['hi'] < w['hi']
    again, _ = compare.compare(a, b, bootstrap=40, level=0.9)  # seed 0 unless told: the same draws
    other, _ = compare.compare(a, b, bootstrap=40, level=0.9, seed=1)
    assert [w['lo'] for w in again['levels']] == [w['lo'] for w in wide['levels']]
    assert [w['lo'] for w in other['levels']] != [w['lo'] for w in wide['levels']]


def test_each_frontier_s_warnings_are_named_and_three_levels_read():
    """A frontier of exactly 3 runs interpolates its 3-parameter law; a pure power law puts E on
    its bound: each warning names its table; a range shared at one loss only is no range."""
    C_a = np.array([1e12, 1e13, 1e14])
    C_b = np.geomspace(1e8, 1e13, 8)
    report, _ = compare.compare({'C': C_a, 'loss': law(C_a)}, {'C': C_b, 'loss': 300.0 * C_b ** -0.2}, bootstrap=0)
    assert len(report['levels']) == 3
    assert report['warnings'][0].startswith('A: 3 points for the 3 free parameters of the frontier law')
    assert [w for w in report['warnings'] if w.startswith('B: ')] == [
        w for w in report['warnings'] if w.startswith('B: E = ') and 'lower bound' in w] != []
    touching = [compare.Frontier(np.ones(3), np.array(loss), None) for loss in ([3.0, 2.5, 2.0], [2.0, 1.5, 1.0])]
    with pytest.raises(ValueError, match='reach no common loss'):
        compare.common_losses(*touching)


def test_failed_bootstrap_refits_are_counted_and_said():
    """A frontier of 4 runs resampled 4 at a time keeps fewer than 3 distinct runs with
    probability (4 + 6 x 14) / 4^4 = 0.34: about 69 of 200 pairs fail (SD 7), are counted,
    and the warning says so, after the frontiers' own (B's E at its bound)."""
    C_a, C_b = np.geomspace(1e12, 1e15, 4), np.geomspace(1e8, 1e13, 8)
    report, _ = compare.compare({'C': C_a, 'loss': law(C_a)}, {'C': C_b, 'loss': 300.0 * C_b ** -0.2}, bootstrap=200)
    assert 40 < report['failed'] < 100
    assert len(report['warnings']) == 2 and report['warnings'][0].startswith('B: E = ')
    assert report['warnings'][1] == f'{report["failed"]} of 200 bootstrap refits failed and are left out of the intervals'
