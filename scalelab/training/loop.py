"""One training run in a workdir, top to bottom: set up, restore, step, finish.

Workdir: config.json (resolved config), metrics.jsonl, tb/ (TensorBoard),
checkpoints/ (orbax), summary.json. Starting the same command again resumes
from the last complete checkpoint; SIGTERM or Ctrl-C saves a checkpoint and
returns cleanly. What happens between steps (log, eval, checkpoint, profile,
preemption check) is in actions.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np

from scalelab.core import checkpoint, files, stop, tasks, weights
from scalelab.core.errors import ConfigError
from scalelab.data import pipeline
from scalelab.science import flops
from scalelab.training import (actions, branches, config, diagnostics, downstream_eval, metrics, optim, train,
                               translation_eval, writers)
from scalelab import data as data_lib
from scalelab.core import progress as progress_lib
from scalelab.core import workdir as workdir_lib
from scalelab.training import plan as plan_lib

# Keys a resumed run may change: how it is watched, saved and laid out, not what it computes
# (a checkpoint restores onto any mesh). Every other key must match the saved config.json.
RESUME_MAY_CHANGE = ('train.log_every', 'train.eval_every', 'train.evals', 'checkpoint.every_steps', 'checkpoint.keep',
                     'checkpoint.async_save', 'mesh.data', 'mesh.fsdp', 'mesh.tensor', 'log.tensorboard',
                     'log.wandb', 'log.wandb_mode', 'log.norms', 'log.spike_window', 'log.spike_z',
                     'eval.downstream_tasks', 'eval.downstream_limit', 'eval.downstream_every')
# These only move the end of the run when the learning rate is constant (after its warmup).
RESUME_MAY_EXTEND = ('train.steps', 'train.tokens', 'train.flops')


def run(cfg, workdir: str | Path, devices: list[jax.Device] | None = None,
        profile_steps: tuple[int, int] | None = None) -> dict:
    """Train (or resume) the run described by `cfg` in `workdir` on `devices`
    (default: all); returns the summary. `profile_steps=(a, b)` writes a JAX
    profiler trace of steps a..b-1 to workdir/profile."""
    session_start = time.perf_counter()
    devices = jax.devices() if devices is None else list(devices)
    plan = plan_lib.make(cfg, len(devices), platform=devices[0].platform)
    cfg = plan.cfg
    workdir = Path(workdir)
    workdir_lib.check_path(workdir)
    check_same_run(workdir / 'config.json', cfg)
    if cfg.train.decay_from:
        branches.check(cfg, resume_conflicts)
    is_main = jax.process_index() == 0
    with workdir_lib.Lock(workdir) if is_main else contextlib.nullcontext():  # one process per workdir
        done = completed_summary(workdir, cfg)
        if done is not None:
            if is_main:
                print(f'{workdir}: already complete at step {done["step"]}; its summary.json is kept', flush=True)
            return done
        if is_main:  # this attempt starts: an earlier one's failure no longer describes the run
            (workdir / workdir_lib.EXIT).unlink(missing_ok=True)
        return _train(plan, workdir, devices, profile_steps, session_start, is_main)


def completed_summary(workdir: Path, cfg) -> dict | None:
    """The summary of a run that already finished this config's steps, if there is one."""
    path = workdir / 'summary.json'
    if not path.exists():
        return None
    summary = workdir_lib.read_json(path, 'delete it: the run rebuilds it from its checkpoint and metrics.jsonl')
    finished = summary.get('status') == 'completed' and summary.get('step') == cfg.train.steps
    return summary if finished else None


def _train(plan: plan_lib.Plan, workdir: Path, devices, profile_steps, session_start: float, is_main: bool) -> dict:
    """The order of a run: set up, restore, step with periodic actions, finish."""
    run = setup(plan, workdir, devices, is_main)
    state, start, prior = restore(run)
    with stop_on_signals() as stop_flag:
        session = new_session(run, state, start, prior, session_start)
        stop_check = actions.StopOnRequest(stop_flag)
        if stop_check.due(session):  # a signal during start-up: nothing trained, nothing to save
            stop_check(session)
        train_steps(session, run, periodic_actions(run, stop_check, profile_steps))
        finish(session, run)
    return summarize(session, run)


@dataclasses.dataclass
class Run:
    """Everything fixed for a session before its first step."""
    cfg: object
    workdir: Path
    is_main: bool
    mesh: jax.sharding.Mesh
    rows: slice
    source: object                   # the data source: train_batch(step, rows), eval_batch(i, rows)
    prepared: train.Setup
    train_fn: object                 # compiled (state, batch) -> (state, metrics)
    eval_fn: object                  # compiled (params, model_state, batch) -> sums
    ckpt: checkpoint.Checkpointer
    progress: progress_lib.Progress
    compile_s: float
    param_counts: dict
    model_state_size: int
    optimizer_state_bytes: int  # the optimizer's moments and counters, all shards together
    flops_per_step: float
    tokens_per_step: int
    peak: flops.Peak | None
    topology: dict


def setup(plan: plan_lib.Plan, workdir: Path, devices, is_main: bool) -> Run:
    """Data, mesh, compiled steps and the run's counts; config.json and the tokenizer written."""
    cfg = plan.cfg
    source = data_lib.load(cfg.data, cfg.train.global_batch, cfg.seed)
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        files.write_json(workdir / 'config.json', cfg.to_dict())
        if getattr(source, 'tokenizer', None) is not None:  # generate, evaluate and export read it here
            source.tokenizer.save(workdir / 'tokenizer')
    batch_size = cfg.train.global_batch

    def abstract_batch(one_row):
        return {k: jax.ShapeDtypeStruct((batch_size, *v.shape[1:]), v.dtype) for k, v in one_row.items()}

    built = train.build(plan, devices, abstract_batch(source.train_batch(0, slice(0, 1))),
                        abstract_batch(source.eval_batch(0, slice(0, 1))))
    abstract_state = built.prepared.abstract_state
    param_counts = flops.count_params(abstract_state['params'], plan.family.EMBEDDING_PARAMS)
    param_counts['with_head'] = flops.scaling_params(param_counts, cfg.model)  # N of flops.FLOP_CONVENTION
    return Run(
        cfg=cfg, workdir=workdir, is_main=is_main, mesh=built.mesh, rows=pipeline.process_rows(built.mesh, batch_size),
        source=source, prepared=built.prepared, train_fn=built.train_fn, eval_fn=built.eval_fn,
        ckpt=checkpoint.Checkpointer(workdir / 'checkpoints', every_steps=cfg.checkpoint.every_steps,
                                     keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save),
        progress=progress_lib.Progress(cfg.train.steps, 0, enabled=is_main),
        compile_s=built.compile_s, param_counts=param_counts,
        model_state_size=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state['model_state'])),
        optimizer_state_bytes=sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                                  for x in jax.tree.leaves(abstract_state['opt_state'])),
        flops_per_step=plan.flops_per_step, tokens_per_step=plan.tokens_per_step,
        peak=flops.total_peak(devices, cfg.train.compute_dtype),
        topology=dict(mesh=dict(cfg.mesh), num_devices=len(devices), num_processes=jax.process_count(),
                      platform=devices[0].platform, device_kind=devices[0].device_kind))


def restore(run: Run) -> tuple[dict, int, dict]:
    """(state, step, totals before this session): the newest readable checkpoint, else a
    fresh state (with train.init_from's parameters when fine-tuning)."""
    target = checkpoint.abstract_target(run.prepared.abstract_state, run.prepared.shardings)
    start, restored = run.ckpt.restore_newest(target, warn=run.progress.warn)
    if start is not None:
        run.progress.note(f'resumed from step {start} (checkpoint in {run.workdir / "checkpoints"})')
        state, prior = restored
        return state, start, prior
    if run.cfg.train.decay_from:  # a decay branch's first session: its trunk's state at decay_start
        state, prior = branches.restore_trunk(run.cfg, target)
        run.progress.note(f'decay branch from step {run.cfg.train.decay_start} of {run.cfg.train.decay_from}')
        return state, run.cfg.train.decay_start, prior
    state = jax.jit(run.prepared.init, out_shardings=run.prepared.shardings)()
    if run.cfg.train.init_from:
        state['params'] = initial_params(run.cfg.train.init_from, run.prepared.abstract_state['params'],
                                         run.prepared.shardings['params'])
        run.progress.note(f'parameters from {run.cfg.train.init_from} (new optimizer state)')
    return state, 0, {'wall_time_s': 0.0, 'tokens': 0, 'flops': 0.0}


def new_session(run: Run, state: dict, start: int, prior: dict, session_start: float) -> actions.Session:
    """The live state the actions share, with writers opened at the resumed step."""
    counts = run.param_counts
    run.progress.note(f'{run.cfg.model.name}: {counts["total"]:,} parameters ({counts["non_embedding"]:,} '
                      f'non-embedding), {run.flops_per_step:.3g} FLOPs/step, mesh {run.topology["mesh"]}, '
                      f'compiled in {run.compile_s:.1f}s')

    def record_at(step: int) -> dict:
        """Cumulative totals: carried across resumes, even if the batch size changed."""
        return dict(step=step, wall_time_s=prior['wall_time_s'] + time.perf_counter() - session_start,
                    tokens=prior['tokens'] + (step - start) * run.tokens_per_step,
                    flops=prior['flops'] + (step - start) * run.flops_per_step, topology=run.topology)

    run.progress.restart_clock(start)
    return actions.Session(
        state=state, step=start, start=start, total_steps=run.cfg.train.steps, progress=run.progress,
        writers=writers.Writers(run.workdir, run.cfg.log, run.cfg.to_dict(), enabled=run.is_main,
                                resume_step=start, warn=run.progress.warn),
        timer=metrics.StepTimer(), record_at=record_at, evaluate=lambda state: evaluate_run(run, state),
        downstream=downstream_eval.scorer(run.cfg.eval, getattr(run.source, 'tokenizer', None),
                                          run.prepared.spec.graphdef, run.mesh, run.rows,
                                          run.cfg.train.global_batch, run.cfg.data.get('seq_len', 0)))


def periodic_actions(run: Run, stop_check: actions.StopOnRequest, profile_steps: tuple[int, int] | None) -> list:
    """What runs between steps, in order (see actions.py)."""
    log = run.cfg.log
    return [
        *([actions.Profile(*profile_steps, run.workdir / 'profile')] if profile_steps else []),
        actions.LogTrain(run.cfg.train.log_every, run.tokens_per_step, run.flops_per_step,
                         run.peak.flops if run.peak else None,
                         diagnostics.LossSpikes(log.spike_window, log.spike_z),
                         (run.cfg.train.global_batch, run.cfg.train.microbatches)),
        actions.Evaluate(run.cfg.train.eval_every),
        actions.DownstreamEval(run.cfg.eval.downstream_every),
        actions.Checkpoint(run.ckpt),
        stop_check,
    ]


def train_steps(session: actions.Session, run: Run, periodic: list) -> None:
    """Step until the last step or until an action stops the session."""
    batch_size = run.cfg.train.global_batch
    while session.status == actions.RUNNING and session.step < session.total_steps:
        batch = pipeline.to_global(run.mesh, run.source.train_batch(session.step, run.rows), batch_size)
        session.state, step_metrics = run.train_fn(session.state, batch)
        session.pending.append(step_metrics)
        session.step += 1
        for action in periodic:
            if session.status == actions.RUNNING and action.due(session):
                action(session)
    if session.status == actions.RUNNING:
        session.status = 'completed'


def finish(session: actions.Session, run: Run) -> None:
    """The last checkpoint (of finite parameters only) and the final evaluation."""
    with session.timer.apart('checkpoint'):
        if session.check_finite() and run.ckpt.latest_step() != session.step and session.step > session.start:
            run.ckpt.save(session.step, session.state, session.record_at(session.step), force=True)
        run.ckpt.wait()
    if session.status == 'diverged':
        run.progress.note(f'the loss stopped being finite at step {session.diverged_at}: stopping; the last '
                          f'checkpoint, step {run.ckpt.latest_step()}, holds finite parameters')
    if session.status == 'completed':  # killed after a final scoring: keep it, write none twice
        records = session.writers.records()
        session.last_eval = logged_at(records, session.step, 'eval_')
        if not session.last_eval:
            session.run_eval()
        if session.downstream is not None:
            session.last_downstream = logged_at(records, session.step, downstream_eval.PREFIX)
            if not session.last_downstream:
                session.run_downstream()
    run.ckpt.close()
    session.writers.close()
    run.progress.close()


def logged_at(records: list[dict], step: int, prefix: str) -> dict:
    """The `prefix` keys of the last record at `step` that holds any: what a session killed
    after writing its final evaluation left (empty if none)."""
    for record in reversed(records):
        if record['step'] == step and any(k.startswith(prefix) for k in record):
            return {k: v for k, v in record.items() if k.startswith(prefix)}
    return {}


def evaluate_run(run: Run, state: dict) -> dict:
    """The run's evaluation: the task's metrics over the fixed evaluation set, summed over
    batches then averaged (a translation run's decoded translations scored too)."""
    batch_size = run.cfg.train.global_batch
    params = jax.device_put(optim.eval_params(state['opt_state'], state['params']),  # schedule-free: its average
                            run.prepared.shardings['params'])  # as the compiled evaluation takes them
    per_batch = jax.device_get([
        run.eval_fn(params, state['model_state'],
                    pipeline.to_global(run.mesh, run.source.eval_batch(i, run.rows), batch_size))
        for i in range(run.source.eval_batches())])
    sums = {key: sum(float(b[key]) for b in per_batch) for key in per_batch[0]}
    metrics = tasks.summarize(run.prepared.spec.task, sums, run.source.bytes_per_token)
    if run.prepared.spec.task == 'seq2seq':  # what translations are scored by: decode the evaluation sources
        metrics.update(translation_eval.evaluate_translations(
            run.source, run.rows, run.mesh, run.cfg, run.prepared.spec.graphdef, params,
            state['model_state']))
    return metrics


def summarize(session: actions.Session, run: Run) -> dict:
    """summary.json: the session's end, and figures over every logged interval of the run."""
    step, counts = session.step, run.param_counts
    final = session.record_at(step)
    records = session.writers.records()
    last_train = session.last_train or next(  # nothing trained in this session: the run's last log line
        (r for r in reversed(records) if 'loss' in r and r['step'] <= step), {})
    intervals = [r for r in records if 'interval_steps' in r]
    step_s = sum(r['interval_steps'] * run.tokens_per_step / r['throughput'] for r in intervals)
    run_steps = sum(r['interval_steps'] for r in intervals)
    peak = checked_peak(run, run_steps * run.flops_per_step / step_s if step_s else None)
    summary = dict(
        status=session.status, step=step, total_steps=session.total_steps,
        train_loss=last_train.get('loss'), **session.last_eval, **session.last_downstream,
        params=counts, model_state_size=run.model_state_size, optimizer=run.cfg.optim.name,
        optimizer_state_bytes=run.optimizer_state_bytes, flops_per_step=run.flops_per_step,
        flops=final['flops'], tokens_per_step=run.tokens_per_step, tokens=final['tokens'],
        scaling_flops=6.0 * counts['with_head'] * final['tokens'], flop_convention=flops.FLOP_CONVENTION,
        tokens_per_s=run_steps * run.tokens_per_step / step_s if step_s else None,  # over every logged interval
        mfu=run_steps * run.flops_per_step / step_s / peak.flops if step_s and peak else None,
        peak=peak.to_dict() if peak else None,
        loss_spikes=sum(r.get('loss_spikes', 0) for r in intervals),
        attn_logit_max=max((r['attn_logit_max'] for r in intervals if 'attn_logit_max' in r), default=None),
        logit_rms=last_train.get('logit_rms'),
        compile_time_s=run.compile_s, wall_time_s=final['wall_time_s'],
        eval_time_s=session.timer.apart_s['eval'], checkpoint_time_s=session.timer.apart_s['checkpoint'],
        topology=run.topology, model=run.cfg.model.name, data=run.source.describe(),
    )
    if session.diverged_at is not None:
        summary['diverged_at_step'] = session.diverged_at
    if run.prepared.spec.task == 'seq2seq':
        summary.update(translation_eval.signatures())
    if 'train_tokens' in summary['data']:  # passes over the training split
        summary['epochs'] = final['tokens'] / summary['data']['train_tokens']
    if run.is_main:
        files.write_json(run.workdir / 'summary.json', summary)
    figures = ', '.join(f'{name} {summary[key]:.4f}' for name, key in (('train loss', 'train_loss'),
                        ('eval loss', 'eval_loss')) if isinstance(summary.get(key), float))
    run.progress.note(f'{session.status} at step {step}: ' + (f'{figures}; ' if figures else '') +
                      f'summary in {run.workdir / "summary.json"}')
    return summary


def checked_peak(run: Run, achieved: float | None) -> flops.Peak | None:
    """The run's peak, measured again when the run itself came within flops.REMEASURE_AT of a
    measured one (it was likely measured under load): MFU never reads high from a low peak."""
    peak = run.peak
    if peak and achieved and peak.source.startswith('measured') and achieved >= flops.REMEASURE_AT * peak.flops:
        peak = flops.total_peak(list(run.mesh.devices.flat), run.cfg.train.compute_dtype, remeasure=True)
    return peak


@contextlib.contextmanager
def stop_on_signals():
    """Yields a flag set by SIGTERM/SIGINT; the loop checks it between steps.

    With several processes, each would stop at its own step and leave the
    others waiting in a collective; there JAX's preemption service takes
    SIGTERM instead and names one step for all (see actions.StopOnRequest).
    """
    if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
        yield threading.Event()
        return
    previous = stop.catch_signals()  # a request made during start-up (scalelab.stop) stays set
    try:
        yield stop.requested
    finally:
        stop.requested.clear()  # honoured: a later run in this process starts afresh
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def initial_params(source: str, abstract_params, shardings):
    """Fine-tuning: another run's (or file's) parameters, laid out and sharded for this model."""
    try:
        params = weights.arrange(weights.load_params_flat(source), abstract_params)
    except ValueError as e:
        raise ConfigError([f'train.init_from={source!r}: {e}']) from None
    return jax.tree.map(lambda p, s: jax.make_array_from_callback(p.shape, s, lambda index: p[index]),
                        params, shardings)


def flat_items(tree: dict, prefix: str = '') -> dict:
    """{'a.b': value} for every leaf of a nested dict."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_items(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def resume_conflicts(saved: dict, now: dict) -> list[str]:
    """Each key whose change would alter the saved run's trajectory, with both values."""
    old, new = flat_items(saved), flat_items(now)
    # A key added since the run was saved: the run ran as its default does now.
    defaults = flat_items(config.base_config(now.get('model', {}).get('name', 'transformer'),
                                             now.get('data', {}).get('name')).to_dict())
    old.update({key: defaults[key] for key in set(new) - set(old) if key in defaults})
    extendable = all(c['optim']['schedule'] == 'constant' and c['train']['steps'] >= c['optim']['warmup_steps']
                     for c in (saved, now))
    conflicts = []
    for key in sorted(set(old) | set(new)):
        if key in config.REMOVED or key in RESUME_MAY_CHANGE or (extendable and key in RESUME_MAY_EXTEND):
            continue
        if old.get(key, '<absent>') != new.get(key, '<absent>'):
            conflicts.append(f'{key}: saved {old.get(key, "<absent>")!r}, now {new.get(key, "<absent>")!r}')
    return conflicts


def may_change_text() -> list[str]:
    """RESUME_MAY_CHANGE for a message: a section whose every key may change reads 'section.*'."""
    base = flat_items(config.base_config().to_dict())
    whole = {key.split('.')[0] for key in RESUME_MAY_CHANGE
             if all(k in RESUME_MAY_CHANGE for k in base if k.split('.')[0] == key.split('.')[0])}
    out = []
    for key in RESUME_MAY_CHANGE:
        section = key.split('.')[0]
        text = f'{section}.*' if section in whole else key
        if text not in out:
            out.append(text)
    return out


def check_same_run(path: Path, cfg) -> None:
    """Refuse to resume a workdir with a config that would change its trajectory."""
    if not path.exists():
        return
    saved = workdir_lib.read_json(path, 'restore it, or delete it to resume with this command\'s config '
                                        '(the checkpoints and metrics stay)')
    conflicts = resume_conflicts(saved, cfg.to_dict())
    if conflicts:
        allowed = ', '.join(may_change_text()) + f' (and {", ".join(RESUME_MAY_EXTEND)} under a constant schedule)'
        raise ConfigError([f'workdir {path.parent} holds a run this config would change: {"; ".join(conflicts)}. '
                           f'Use a new --workdir; a resumed run may change only {allowed}'])
