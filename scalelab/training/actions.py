"""The periodic pieces of the training loop, each small, named and testable alone.

After every step the loop asks each action, in order, whether it is `due`
and, if so, calls it with the `Session`; none runs once the session has
stopped (diverged, preempted). Adding an action touches only its own class
and the list in `loop.periodic_actions`. Evaluation comes before the
checkpoint of the same step, so a kill between them repeats the evaluation
on resume instead of losing it.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from scalelab.core import checkpoint
from scalelab.training import diagnostics, metrics, noise_scale
from scalelab.core import progress as progress_lib
from scalelab.training import writers as writers_lib

RUNNING = 'running'


@dataclasses.dataclass
class Session:
    """What the actions read and change: one training session's live state."""
    state: dict
    step: int
    start: int
    total_steps: int
    progress: progress_lib.Progress
    writers: writers_lib.Writers
    timer: metrics.StepTimer
    record_at: Callable[[int], dict]        # cumulative step, time, tokens and FLOPs at a step
    evaluate: Callable[[dict], dict]        # train state -> eval metrics on the fixed set
    downstream: Callable[[dict], dict] | None = None  # train state -> downstream task metrics, if asked
    status: str = RUNNING                   # then: completed | preempted | diverged
    pending: list = dataclasses.field(default_factory=list)  # device metrics of steps not yet fetched
    fetched: list = dataclasses.field(default_factory=list)  # host metrics of this log interval
    diverged_at: int | None = None
    last_train: dict = dataclasses.field(default_factory=dict)
    last_eval: dict = dataclasses.field(default_factory=dict)
    last_downstream: dict = dataclasses.field(default_factory=dict)

    def fetch(self) -> list[dict]:
        """This log interval's step metrics on the host (waits for those steps)."""
        if self.pending:
            self.fetched += jax.device_get(self.pending)
            self.pending = []
        return self.fetched

    def check_finite(self) -> bool:
        """Whether every step so far was finite; the first that was not ends the session."""
        at = first_nonfinite_step(self.fetch(), self.step)
        if at is not None and self.diverged_at is None:
            self.status, self.diverged_at = 'diverged', at
        return at is None

    def run_eval(self) -> None:
        jax.block_until_ready(self.state)  # the steps' compute counts as step time, not eval time
        with self.timer.apart('eval'):
            self.last_eval = self.evaluate(self.state)
        self.writers.write({'step': self.step, **self.last_eval})
        self.progress.note(f'eval at step {self.step}: ' +
                           ' | '.join(f'{k[5:]} {v:.4f}' for k, v in self.last_eval.items()))

    def run_downstream(self) -> None:
        jax.block_until_ready(self.state)
        with self.timer.apart('eval'):  # evaluation time: kept out of the steps' throughput
            self.last_downstream = self.downstream(self.state)
        self.writers.write({'step': self.step, **self.last_downstream})
        self.progress.note(f'downstream at step {self.step}: ' + ' | '.join(
            f'{k.removeprefix("downstream/")} {v:.4f}' for k, v in self.last_downstream.items() if k.endswith(
                ('/acc', '/bpb'))))


def first_nonfinite_step(step_metrics: list[dict], last_step: int) -> int | None:
    """The first of the steps ending at `last_step` whose loss, gradients or new
    parameters were not finite (the step function's `finite` flag), or None."""
    for offset, values in enumerate(step_metrics):
        if not values['finite']:
            return last_step - len(step_metrics) + offset + 1
    return None


def logit_stats(step_metrics: list[dict]) -> dict[str, float]:
    """An interval's logit statistics: the largest attention score of any step, the
    mean output-logit RMS and z-loss term (those the step reported)."""
    out = {}
    if 'attn_logit_max' in step_metrics[-1]:
        out['attn_logit_max'] = float(np.max([v['attn_logit_max'] for v in step_metrics]))
    for key in ('logit_rms', 'z_loss'):
        if key in step_metrics[-1]:
            out[key] = float(np.mean([v[key] for v in step_metrics]))
    return out


class LogTrain:
    """Every `every` steps and at the last: one record of the interval (mean loss and
    grad norm, throughput, MFU, the last step's norms, loss spikes) to every writer."""

    def __init__(self, every: int, tokens_per_step: int, flops_per_step: float, peak: float | None,
                 spikes: diagnostics.LossSpikes, batches: tuple[int, int] = (1, 1)):
        self.every, self.tokens_per_step, self.flops_per_step, self.peak = every, tokens_per_step, flops_per_step, peak
        self.spikes = spikes
        self.batches = batches  # (global batch, microbatches): the two batch sizes of the noise scale

    def due(self, s: Session) -> bool:
        return s.step % self.every == 0 or s.step == s.total_steps

    def __call__(self, s: Session) -> None:
        values = s.fetch()
        seconds = s.timer.lap()
        losses = [float(v['loss']) for v in values]
        loss_z, spikes = self.spikes.add(losses)
        totals = s.record_at(s.step)
        norms = diagnostics.per_layer({k: v for k, v in values[-1].items()
                                       if k.startswith(('param_norm', 'update_', 'grad_norm/'))})
        record = {
            'step': s.step,
            'interval_steps': len(values),
            'loss': float(np.mean(losses)),
            'lr': float(values[-1]['lr']),
            'grad_norm': float(np.mean([v['grad_norm'] for v in values])),
            'tokens': totals['tokens'],
            'flops': totals['flops'],
            'throughput': len(values) * self.tokens_per_step / seconds,
            'mfu': len(values) * self.flops_per_step / seconds / self.peak if self.peak else None,
            'loss_z': loss_z,
            'loss_spikes': spikes,
            **logit_stats(values),
            **noise_scale.interval(values, *self.batches),
            **norms,
        }
        s.writers.write(record)
        s.progress.report(s.step, {'loss': f'{record["loss"]:.4f}', 'tok/s': f'{record["throughput"]:,.0f}',
                                   'MFU': f'{100 * record["mfu"]:.1f}%' if self.peak else 'n/a'})
        if spikes:
            s.progress.warn(f'loss spike at step {s.step}: {spikes} step(s) in the last {len(values)} more than '
                            f'{self.spikes.threshold:g} standard deviations above the loss before them '
                            f'(largest z {loss_z:.1f})')
        s.check_finite()
        s.fetched = []
        s.last_train = record


class Evaluate:
    """Every `every` steps (0: never; the final evaluation is the loop's), on finite parameters."""

    def __init__(self, every: int):
        self.every = every

    def due(self, s: Session) -> bool:
        return bool(self.every) and s.step % self.every == 0 and s.step < s.total_steps

    def __call__(self, s: Session) -> None:
        if s.check_finite():
            s.run_eval()


class DownstreamEval:
    """Every `every` steps (0: never; the final scoring is the loop's), on finite parameters,
    when the run names downstream tasks."""

    def __init__(self, every: int):
        self.every = every

    def due(self, s: Session) -> bool:
        return (s.downstream is not None and bool(self.every) and s.step % self.every == 0
                and s.step < s.total_steps)

    def __call__(self, s: Session) -> None:
        if s.check_finite():
            s.run_downstream()


class Checkpoint:
    """When the checkpointer asks for a step; never of a non-finite state."""

    def __init__(self, ckpt: checkpoint.Checkpointer):
        self.ckpt = ckpt

    def due(self, s: Session) -> bool:
        return self.ckpt.should_save(s.step)

    def __call__(self, s: Session) -> None:
        if not s.check_finite():
            return
        jax.block_until_ready(s.state)
        with s.timer.apart('checkpoint'):
            self.ckpt.save(s.step, s.state, s.record_at(s.step))


class Profile:
    """A JAX profiler trace of steps first+1..last (after `first` steps, until `last`)."""

    def __init__(self, first: int, last: int, directory: Path):
        self.first, self.last, self.directory = first, last, directory

    def due(self, s: Session) -> bool:
        return s.step in (self.first, self.last)

    def __call__(self, s: Session) -> None:
        if s.step == self.first:
            jax.profiler.start_trace(str(self.directory))
        else:
            jax.block_until_ready(s.state)
            jax.profiler.stop_trace()
            s.progress.note(f'profile of steps {self.first}..{self.last - 1} in {self.directory}')


class StopOnRequest:
    """The preemption check: SIGTERM/Ctrl-C (one process) or JAX's preemption sync
    point (several, which agree on one step) ends the session after this step."""

    def __init__(self, flag: threading.Event):
        self.flag = flag

    def due(self, s: Session) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(s.step)
        return self.flag.is_set()

    def __call__(self, s: Session) -> None:
        s.status = 'preempted'
        s.progress.note('stop requested during start-up: no step taken, nothing to save' if s.step == s.start
                        else f'stop requested: checkpointing step {s.step} and exiting')
