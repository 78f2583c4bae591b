"""Each periodic action alone, on a Session of plain values (no model, no compile)."""
import threading

import pytest

from scalelab.training import actions, diagnostics, metrics


class Writers:
    def __init__(self):
        self.lines = []

    def write(self, record):
        self.lines.append(record)

    def records(self):
        return list(self.lines)


class Notes:
    def __init__(self):
        self.notes, self.warnings, self.reports = [], [], []

    def note(self, message):
        self.notes.append(message)

    def warn(self, message):
        self.warnings.append(message)

    def report(self, step, fields):
        self.reports.append((step, fields))


class Saver:
    def __init__(self, every):
        self.every, self.saved = every, []

    def should_save(self, step):
        return step % self.every == 0

    def save(self, step, state, meta):
        self.saved.append((step, state))


def session(step, losses, *, total=100, finite=None, clock=None):
    """A Session after `step` steps whose last len(losses) are pending, each with that loss."""
    finite = finite or [True] * len(losses)
    s = actions.Session(
        state={'w': 1.0}, step=step, start=0, total_steps=total, progress=Notes(), writers=Writers(),
        timer=metrics.StepTimer(), record_at=lambda k: {'tokens': 10 * k, 'flops': 100.0 * k},
        evaluate=lambda state: {'eval_loss': 2.5})
    s.pending = [{'loss': loss, 'grad_norm': 1.0, 'lr': 0.1, 'finite': ok, 'param_norm': 3.0}
                 for loss, ok in zip(losses, finite)]
    return s


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(metrics, 'clock', lambda: now[0])
    return now


def test_log_train_writes_the_interval(clock):
    s = session(30, [3.0, 2.0, 1.0])
    log = actions.LogTrain(every=10, tokens_per_step=10, flops_per_step=100.0, peak=1000.0,
                           spikes=diagnostics.LossSpikes(100, 6.0))
    clock[0] = 3.0  # three steps in three seconds
    assert log.due(s) and not log.due(session(31, [1.0]))
    log(s)
    (line,) = s.writers.lines
    assert line['step'] == 30 and line['interval_steps'] == 3 and line['loss'] == pytest.approx(2.0)
    assert line['throughput'] == pytest.approx(10.0) and line['mfu'] == pytest.approx(0.1)
    assert line['tokens'] == 300 and line['param_norm'] == 3.0 and line['lr'] == 0.1
    assert s.status == actions.RUNNING and s.pending == [] and s.fetched == []
    assert s.progress.reports[0][0] == 30


def test_log_train_at_the_last_step_even_off_the_interval():
    s = session(95, [1.0], total=95)
    assert actions.LogTrain(10, 1, 1.0, None, diagnostics.LossSpikes(10, 6.0)).due(s)


def test_a_nonfinite_step_ends_the_session_at_that_step(clock):
    s = session(30, [3.0, float('nan'), 1.0], finite=[True, False, True])
    clock[0] = 1.0
    actions.LogTrain(10, 10, 100.0, None, diagnostics.LossSpikes(100, 6.0))(s)
    assert s.status == 'diverged' and s.diverged_at == 29
    assert len(s.writers.lines) == 1  # the interval is still logged


def test_checkpoint_saves_when_due_and_never_a_nonfinite_state(clock):
    saver = Saver(every=5)
    good = session(10, [1.0, 1.0])
    action = actions.Checkpoint(saver)
    assert action.due(good) and not action.due(session(11, [1.0]))
    action(good)
    assert saver.saved == [(10, {'w': 1.0})]
    bad = session(15, [1.0, 1.0], finite=[True, False])
    action(bad)
    assert saver.saved == [(10, {'w': 1.0})] and bad.status == 'diverged' and bad.diverged_at == 15


def test_evaluate_when_due_but_not_at_the_end_and_not_on_a_diverged_state(clock):
    action = actions.Evaluate(every=20)
    s = session(40, [1.0])
    assert action.due(s) and not action.due(session(30, [1.0])) and not action.due(session(100, [1.0]))
    assert not actions.Evaluate(every=0).due(s)
    action(s)
    assert s.writers.lines == [{'step': 40, 'eval_loss': 2.5}] and s.last_eval == {'eval_loss': 2.5}
    bad = session(40, [float('nan')], finite=[False])
    action(bad)
    assert bad.writers.lines == [] and bad.status == 'diverged'


def test_stop_on_request_preempts(clock):
    flag = threading.Event()
    action = actions.StopOnRequest(flag)
    s = session(7, [1.0])
    assert not action.due(s)
    flag.set()
    assert action.due(s)
    action(s)
    assert s.status == 'preempted' and 'checkpointing step 7' in s.progress.notes[-1]


def test_profile_is_due_at_its_two_ends(tmp_path):
    action = actions.Profile(3, 6, tmp_path)
    assert [k for k in range(10) if action.due(session(k, []))] == [3, 6]


def test_the_interval_logs_the_largest_attention_score_and_the_mean_logit_rms(clock):
    """Known per-step values: attn_logit_max is the interval's largest (not its mean), the
    logit RMS and the z-loss term their means."""
    s = session(30, [3.0, 2.0, 1.0])
    for step, (score, rms, z) in zip(s.pending, [(4.0, 1.0, 0.1), (17.0, 2.0, 0.2), (9.0, 6.0, 0.6)]):
        step.update(attn_logit_max=score, logit_rms=rms, z_loss=z)
    clock[0] = 3.0
    actions.LogTrain(10, 10, 100.0, None, diagnostics.LossSpikes(100, 6.0))(s)
    (line,) = s.writers.lines
    assert line['attn_logit_max'] == 17.0
    assert line['logit_rms'] == pytest.approx(3.0) and line['z_loss'] == pytest.approx(0.3)
