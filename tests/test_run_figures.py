"""A run's figures: step time without evaluation and checkpoint time, and no checkpoint
of a non-finite state. Time comes from a fake clock that the steps advance."""
import jax
import numpy as np
import pytest

from scalelab.core import checkpoint, weights
from scalelab.training import loop, metrics, train
from tests.helpers import tiny_lm


class Clock(list):
    """The time (element 0) and the steps saved."""
    saved: list

    def __init__(self, items):
        super().__init__(items)
        self.saved = []


@pytest.fixture
def fake_clock(monkeypatch):
    """Steps take 1 s, each evaluation batch 100 s, each checkpoint save 1000 s, on a clock
    that only they advance."""
    now = Clock([0.0])
    monkeypatch.setattr(metrics, 'clock', lambda: now[0])
    compile_steps, save = train.compile_steps, checkpoint.Checkpointer.save

    def timed_compile(*args, **kwargs):
        train_fn, eval_fn = compile_steps(*args, **kwargs)

        def step(state, batch):
            now[0] += 1.0
            return train_fn(state, batch)

        def evaluate(*inputs):
            now[0] += 100.0
            return eval_fn(*inputs)
        return step, evaluate

    def timed_save(self, step, *args, **kwargs):
        now[0] += 1000.0
        now.saved.append(step)
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(train, 'compile_steps', timed_compile)
    monkeypatch.setattr(checkpoint.Checkpointer, 'save', timed_save)
    return now


def test_throughput_counts_step_time_only(tmp_path, fake_clock):
    # eval_every is not a multiple of log_every: evaluations fall inside log intervals.
    cfg = tiny_lm(**{'train.steps': 20, 'train.log_every': 4, 'train.eval_every': 6, 'checkpoint.every_steps': 5})
    summary = loop.run(cfg, tmp_path)
    tokens_per_step = 16 * 32
    lines = [r for r in metrics.read_jsonl(tmp_path / 'metrics.jsonl') if 'throughput' in r]
    assert [r['step'] for r in lines] == [4, 8, 12, 16, 20]
    for line in lines:  # one second a step, whatever else happened in the interval
        assert line['throughput'] == pytest.approx(tokens_per_step)
    assert summary['tokens_per_s'] == pytest.approx(tokens_per_step)
    eval_batches = 1024 // 32 // 16  # data.eval_tokens / seq_len windows, 16 a batch
    assert summary['eval_time_s'] == pytest.approx(100.0 * eval_batches * 4)  # steps 6, 12, 18 and the end
    # orbax also saves the first step of a workdir that has no checkpoint yet
    assert fake_clock.saved == [1, 5, 10, 15, 20]
    assert summary['checkpoint_time_s'] == pytest.approx(1000.0 * 5)


def test_a_non_finite_step_stops_the_run_before_any_checkpoint_holds_it(tmp_path, monkeypatch):
    """Step 5's loss is NaN (its parameters are poisoned); the checkpoint due at step 6,
    before the next log line at step 10, must not be written."""
    compile_steps = train.compile_steps

    def poisoning_compile(*args, **kwargs):
        train_fn, eval_fn = compile_steps(*args, **kwargs)

        def step(state, batch):
            if int(state['step']) == 4:
                state = {**state, 'params': jax.tree.map(lambda p: p * np.nan, state['params'])}
            return train_fn(state, batch)
        return step, eval_fn

    monkeypatch.setattr(train, 'compile_steps', poisoning_compile)
    cfg = tiny_lm(**{'train.steps': 20, 'train.log_every': 10, 'checkpoint.every_steps': 3})
    summary = loop.run(cfg, tmp_path)
    assert summary['status'] == 'diverged' and summary['diverged_at_step'] == 5
    ckpt = checkpoint.Checkpointer(tmp_path / 'checkpoints', every_steps=3, keep=3, async_save=False)
    assert ckpt.latest_step() == 3
    ckpt.close()
    assert all(np.isfinite(v).all() for v in weights.load_params_flat(tmp_path).values())
