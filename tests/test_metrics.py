"""metrics.jsonl and the step timer, against records and clocks written by hand."""
import json

import numpy as np
import pytest

from scalelab.training import metrics


def write_lines(path, lines):
    path.write_text(''.join(line + '\n' for line in lines))


def test_a_resumed_log_keeps_lines_up_to_the_checkpoint_and_drops_a_torn_one(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    write_lines(path, [json.dumps({'step': 5, 'loss': 3.0}), '', json.dumps({'step': 10, 'loss': 2.0}),
                       '{"step": 12, "lo', json.dumps({'step': 15, 'loss': 1.0})])
    warned = []
    log = metrics.MetricsLog(path, enabled=True, resume_step=10, warn=warned.append)
    assert log.records() == [{'step': 5, 'loss': 3.0}, {'step': 10, 'loss': 2.0}]
    assert len(warned) == 1 and 'line 4 is not whole JSON' in warned[0] and '{"step": 12, "lo' in warned[0]
    log.write({'step': 11, 'loss': 1.5})
    assert [r['step'] for r in log.records()] == [5, 10, 11]
    assert path.read_text().count('\n') == 3


def test_a_process_other_than_the_first_writes_and_reads_nothing(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    write_lines(path, [json.dumps({'step': 20, 'loss': 1.0})])
    log = metrics.MetricsLog(path, enabled=False, resume_step=10)
    log.write({'step': 21, 'loss': 0.5})
    assert log.records() == []
    assert path.read_text() == json.dumps({'step': 20, 'loss': 1.0}) + '\n'  # untouched


def test_curves_read_evaluations_at_the_tokens_of_their_steps(tmp_path):
    write_lines(tmp_path / 'metrics.jsonl', [json.dumps(r) for r in (
        {'step': 2, 'loss': 4.0, 'tokens': 200, 'flops': 1e3}, {'step': 4, 'loss': 3.0, 'tokens': 400, 'flops': 2e3},
        {'step': 3, 'eval_loss': 3.5}, {'step': 8, 'loss': 2.0, 'tokens': 800, 'flops': 4e3},
        {'step': 8, 'eval_loss': 2.5})])
    by_tokens = metrics.curves(tmp_path, 'tokens')
    np.testing.assert_array_equal(by_tokens['train'][0], [200, 400, 800])
    np.testing.assert_array_equal(by_tokens['train'][1], [4.0, 3.0, 2.0])
    np.testing.assert_array_equal(by_tokens['eval'][0], [300, 800])  # step 3 lies halfway between 200 and 400
    np.testing.assert_array_equal(by_tokens['eval'][1], [3.5, 2.5])
    by_step = metrics.curves(tmp_path, 'step')
    np.testing.assert_array_equal(by_step['eval'][0], [3, 8])
    np.testing.assert_array_equal(metrics.curves(tmp_path, 'flops')['eval'][0], [1.5e3, 4e3])
    with pytest.raises(FileNotFoundError, match='no metrics.jsonl'):
        metrics.curves(tmp_path / 'elsewhere', 'step')


def test_the_step_timer_leaves_out_what_ran_apart(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(metrics, 'clock', lambda: now[0])
    timer = metrics.StepTimer()
    now[0] = 103.0
    with timer.apart('eval'):
        now[0] = 110.0
    now[0] = 111.0
    assert timer.lap() == 4.0          # 11 s, of which 7 were evaluation
    with timer.apart('checkpoint'):
        now[0] = 113.0
    with timer.apart('eval'):
        now[0] = 114.0
    now[0] = 120.0
    assert timer.lap() == 6.0          # 9 s, 3 apart
    assert timer.apart_s == {'eval': 8.0, 'checkpoint': 2.0}


def test_a_torn_line_mid_file_is_dropped_alone_and_quoted_to_60_characters(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    torn = '{"step": 3, "loss": 2.0, "note": "' + 'x' * 80
    write_lines(path, [json.dumps({'step': 2, 'loss': 3.0}), torn, json.dumps({'step': 4, 'loss': 1.0})])
    warned = []
    log = metrics.MetricsLog(path, enabled=True, resume_step=10, warn=warned.append)
    assert [r['step'] for r in log.records()] == [2, 4]   # the lines after it are kept
    assert warned[0].endswith(repr(torn[:60]))


def test_curves_by_step_keep_evaluations_outside_the_logged_steps(tmp_path):
    """By step, an evaluation after the last training line (the final one) or before the first
    keeps its own step; by tokens it takes the nearest logged tokens (np.interp's ends)."""
    write_lines(tmp_path / 'metrics.jsonl', [json.dumps(r) for r in (
        {'step': 1, 'eval_loss': 5.0}, {'step': 2, 'loss': 4.0, 'tokens': 200}, {'step': 4, 'loss': 3.0, 'tokens': 400},
        {'step': 6, 'eval_loss': 2.5})])
    np.testing.assert_array_equal(metrics.curves(tmp_path, 'step')['eval'][0], [1, 6])
    np.testing.assert_array_equal(metrics.curves(tmp_path, 'tokens')['eval'][0], [200, 400])
    write_lines(tmp_path / 'metrics.jsonl', [json.dumps({'step': 3, 'eval_loss': 2.0})])  # evaluations only
    assert metrics.curves(tmp_path, 'tokens')['eval'][0].tolist() == [3.0]
    assert metrics.curves(tmp_path, 'tokens')['train'][0].size == 0
