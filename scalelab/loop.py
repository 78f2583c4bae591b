"""One training run in a workdir: resume, loop, evaluate, checkpoint, summarize.

Workdir: config.json (resolved config), metrics.jsonl, checkpoints/ (orbax),
summary.json. Starting the same command again resumes from the last complete
checkpoint; SIGTERM or Ctrl-C saves a checkpoint and returns cleanly.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from scalelab import checkpoint, config, export, flops, metrics, models, parallel, tasks, train
from scalelab import stop
from scalelab import workdir as workdir_lib
from scalelab import data as data_lib
from scalelab.data import pipeline
from scalelab.errors import ConfigError

# Keys a resumed run may change: how it is watched, saved and laid out, not what it computes
# (a checkpoint restores onto any mesh). Every other key must match the saved config.json.
RESUME_MAY_CHANGE = ('train.log_every', 'train.eval_every', 'checkpoint.every_steps', 'checkpoint.keep',
                     'checkpoint.async_save', 'mesh.data', 'mesh.fsdp', 'mesh.tensor')
# These only move the end of the run when the learning rate is constant (after its warmup).
RESUME_MAY_EXTEND = ('train.steps', 'train.tokens', 'train.flops')


@contextlib.contextmanager
def stop_on_signals():
    """Yields a flag set by SIGTERM/SIGINT; the loop checks it between steps.

    With several processes, each would stop at its own step and leave the
    others waiting in a collective; there JAX's preemption service takes
    SIGTERM instead and names one step for all (see `should_stop`).
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


def should_stop(flag: threading.Event, step: int) -> bool:
    if jax.process_count() > 1:
        return multihost_utils.reached_preemption_sync_point(step)
    return flag.is_set()


def first_nonfinite_step(step_metrics: list[dict], last_step: int) -> int | None:
    """The first of the steps ending at `last_step` whose loss, gradients or new
    parameters were not finite (the step function's `finite` flag), or None."""
    for offset, values in enumerate(step_metrics):
        if not values['finite']:
            return last_step - len(step_metrics) + offset + 1
    return None


def initial_params(source: str, abstract_params, shardings):
    """Fine-tuning: another run's (or file's) parameters, laid out and sharded for this model."""
    try:
        params = export.arrange(export.load_params_flat(source), abstract_params)
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
    extendable = all(c['optim']['schedule'] == 'constant' and c['train']['steps'] >= c['optim']['warmup_steps']
                     for c in (saved, now))
    conflicts = []
    for key in sorted(set(old) | set(new)):
        if key in config.REMOVED or key in RESUME_MAY_CHANGE or (extendable and key in RESUME_MAY_EXTEND):
            continue
        if old.get(key, '<absent>') != new.get(key, '<absent>'):
            conflicts.append(f'{key}: saved {old.get(key, "<absent>")!r}, now {new.get(key, "<absent>")!r}')
    return conflicts


def check_same_run(path: Path, cfg) -> None:
    """Refuse to resume a workdir with a config that would change its trajectory."""
    if not path.exists():
        return
    saved = workdir_lib.read_json(path, 'restore it, or delete it to resume with this command\'s config '
                                        '(the checkpoints and metrics stay)')
    conflicts = resume_conflicts(saved, cfg.to_dict())
    if conflicts:
        allowed = ', '.join(RESUME_MAY_CHANGE) + f' (and {", ".join(RESUME_MAY_EXTEND)} under a constant schedule)'
        raise ConfigError([f'workdir {path.parent} holds a run this config would change: {"; ".join(conflicts)}. '
                           f'Use a new --workdir; a resumed run may change only {allowed}'])


def run(cfg, workdir: str | Path, devices: list[jax.Device] | None = None,
        profile_steps: tuple[int, int] | None = None) -> dict:
    """Train (or resume) the run described by `cfg` in `workdir` on `devices`
    (default: all); returns the summary. `profile_steps=(a, b)` writes a JAX
    profiler trace of steps a..b-1 to workdir/profile."""
    session_start = time.perf_counter()
    devices = jax.devices() if devices is None else list(devices)
    cfg = config.resolve(cfg, len(devices))
    workdir = Path(workdir)
    workdir_lib.check_path(workdir)
    check_same_run(workdir / 'config.json', cfg)
    is_main = jax.process_index() == 0
    with workdir_lib.Lock(workdir) if is_main else contextlib.nullcontext():  # one process per workdir
        done = completed_summary(workdir, cfg)
        if done is not None:
            if is_main:
                print(f'{workdir}: already complete at step {done["step"]}; its summary.json is kept', flush=True)
            return done
        return _train(cfg, workdir, devices, profile_steps, session_start, is_main)


def completed_summary(workdir: Path, cfg) -> dict | None:
    """The summary of a run that already finished this config's steps, if there is one."""
    path = workdir / 'summary.json'
    if not path.exists():
        return None
    summary = workdir_lib.read_json(path, 'delete it: the run rebuilds it from its checkpoint and metrics.jsonl')
    finished = summary.get('status') == 'completed' and summary.get('step') == cfg.train.steps
    return summary if finished else None


def _train(cfg, workdir: Path, devices, profile_steps, session_start: float, is_main: bool) -> dict:
    spec = data_lib.spec(cfg.data)
    source = data_lib.load(cfg.data, cfg.train.global_batch, cfg.seed)
    if cfg.model.get('attention') == 'cudnn' and devices[0].platform != 'gpu':
        raise ConfigError([f"model.attention='cudnn': needs a GPU, these devices are {devices[0].platform}; "
                           "use 'auto', 'xla' or 'einsum'"])
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        metrics.write_json(workdir / 'config.json', cfg.to_dict())
        if getattr(source, 'tokenizer', None) is not None:  # generate, evaluate and export read it here
            source.tokenizer.save(workdir / 'tokenizer')

    mesh = parallel.make_mesh(cfg.mesh, devices)
    rows = pipeline.process_rows(mesh, cfg.train.global_batch)
    total_steps, batch_size = cfg.train.steps, cfg.train.global_batch
    prepared = train.setup(cfg, mesh)
    abstract_state, shardings = prepared.abstract_state, prepared.shardings

    ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', every_steps=cfg.checkpoint.every_steps,
                                   keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    progress = metrics.Progress(total_steps, 0, enabled=is_main)
    target = checkpoint.abstract_target(abstract_state, shardings)
    start, restored = ckpt.restore_newest(target, warn=progress.warn)
    if start is None:
        start, prior = 0, {'wall_time_s': 0.0, 'tokens': 0, 'flops': 0.0}
        state = jax.jit(prepared.init, out_shardings=shardings)()
        if cfg.train.init_from:
            state['params'] = initial_params(cfg.train.init_from, abstract_state['params'], shardings['params'])
            progress.note(f'parameters from {cfg.train.init_from} (new optimizer state)')
    else:
        state, prior = restored
        progress.note(f'resumed from step {start} (checkpoint in {workdir / "checkpoints"})')

    def abstract_batch(one_row):
        return {k: jax.ShapeDtypeStruct((batch_size, *v.shape[1:]), v.dtype) for k, v in one_row.items()}

    compile_start = time.perf_counter()
    train_fn, eval_fn = train.compile_steps(prepared.spec, mesh, shardings, abstract_state,
                                            abstract_batch(source.train_batch(0, slice(0, 1))),
                                            abstract_batch(source.eval_batch(0, slice(0, 1))))
    compile_s = time.perf_counter() - compile_start

    param_counts = flops.count_params(abstract_state['params'], models.family(cfg.model.name).EMBEDDING_PARAMS)
    param_counts['with_head'] = flops.scaling_params(param_counts, cfg.model)  # N of flops.FLOP_CONVENTION
    model_state_size = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state['model_state']))
    flops_per_step = flops.train_flops_per_step(cfg.model, spec, batch_size)
    tokens_per_step = batch_size * flops.tokens_per_example(spec)
    peak = flops.total_peak_flops(devices, cfg.train.compute_dtype)
    topology = dict(mesh=dict(cfg.mesh), num_devices=len(devices), num_processes=jax.process_count(),
                    platform=devices[0].platform, device_kind=devices[0].device_kind)
    log = metrics.MetricsLog(workdir / 'metrics.jsonl', enabled=is_main, resume_step=start, warn=progress.warn)
    progress.note(f'{cfg.model.name}: {param_counts["total"]:,} parameters '
                  f'({param_counts["non_embedding"]:,} non-embedding), {flops_per_step:.3g} FLOPs/step, '
                  f'mesh {topology["mesh"]}, compiled in {compile_s:.1f}s')

    def record_at(step: int) -> dict:
        """Cumulative totals: carried across resumes, even if the batch size changed."""
        return dict(step=step, wall_time_s=prior['wall_time_s'] + time.perf_counter() - session_start,
                    tokens=prior['tokens'] + (step - start) * tokens_per_step,
                    flops=prior['flops'] + (step - start) * flops_per_step, topology=topology)

    def evaluate(step: int) -> dict:
        per_batch = jax.device_get([
            eval_fn(state['params'], state['model_state'], pipeline.to_global(mesh, source.eval_batch(i, rows),
                                                                                batch_size))
            for i in range(source.eval_batches())])
        sums = {key: sum(float(b[key]) for b in per_batch) for key in per_batch[0]}
        result = tasks.summarize(spec.task, sums, source.bytes_per_token)
        log.write({'step': step, **result})
        progress.note(f'eval at step {step}: ' + ' | '.join(f'{k[5:]} {v:.4f}' for k, v in result.items()))
        return result

    status, last_train, last_eval, diverged_at = 'completed', {}, {}, None
    pending = []
    step = start
    progress.restart_clock(start)
    timer = metrics.StepTimer()

    def finished_steps() -> None:
        """Wait for the dispatched steps, so their compute counts as step time, not as what follows."""
        jax.block_until_ready(state)

    with stop_on_signals() as stop_requested:
        if should_stop(stop_requested, step):  # a signal during start-up: nothing trained, nothing to save
            status = 'preempted'
            progress.note('stop requested during start-up: no step taken, nothing to save')
        while step < total_steps and status == 'completed':
            if profile_steps and step == profile_steps[0]:
                jax.profiler.start_trace(str(workdir / 'profile'))
            batch = pipeline.to_global(mesh, source.train_batch(step, rows), batch_size)
            state, step_metrics = train_fn(state, batch)
            pending.append(step_metrics)
            step += 1
            if profile_steps and step == profile_steps[1]:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                progress.note(f'profile of steps {profile_steps[0]}..{step - 1} in {workdir / "profile"}')
            if step % cfg.train.log_every == 0 or step == total_steps:
                values = jax.device_get(pending)
                seconds = timer.lap()
                last_train = {
                    'step': step,
                    'interval_steps': len(values),
                    'loss': float(np.mean([v['loss'] for v in values])),
                    'lr': float(values[-1]['lr']),
                    'grad_norm': float(np.mean([v['grad_norm'] for v in values])),
                    'tokens': record_at(step)['tokens'],
                    'flops': record_at(step)['flops'],
                    'throughput': len(values) * tokens_per_step / seconds,
                    'mfu': len(values) * flops_per_step / seconds / peak if peak else None,
                }
                log.write(last_train)
                progress.report(step, {'loss': f'{last_train["loss"]:.4f}',
                                       'tok/s': f'{last_train["throughput"]:,.0f}',
                                       'MFU': f'{100 * last_train["mfu"]:.1f}%' if peak else 'n/a'})
                diverged_at = first_nonfinite_step(values, step)
                pending = []
            elif ckpt.should_save(step):  # a checkpoint must not hold a non-finite state
                diverged_at = first_nonfinite_step(jax.device_get(pending), step)
            if diverged_at is not None:
                status = 'diverged'
                progress.note(f'the loss stopped being finite at step {diverged_at}: stopping; the last '
                              f'checkpoint, step {ckpt.latest_step()}, holds finite parameters')
                break
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total_steps:
                finished_steps()
                with timer.apart('eval'):
                    last_eval = evaluate(step)
            if ckpt.should_save(step):
                finished_steps()
                with timer.apart('checkpoint'):
                    ckpt.save(step, state, record_at(step))
            if should_stop(stop_requested, step):
                status = 'preempted'
                progress.note(f'stop requested: checkpointing step {step} and exiting')
                break
        with timer.apart('checkpoint'):
            if status != 'diverged' and ckpt.latest_step() != step and step > start:
                ckpt.save(step, state, record_at(step), force=True)
            ckpt.wait()
        if status == 'completed':
            logged = [r for r in log.records() if r['step'] == step and 'eval_loss' in r]
            if logged:  # killed after its final evaluation: keep that one, write none twice
                last_eval = {k: v for k, v in logged[-1].items() if k.startswith('eval_')}
            else:
                with timer.apart('eval'):
                    last_eval = evaluate(step)
    ckpt.close()

    final = record_at(step)
    records = log.records()
    if not last_train:  # nothing trained in this session: the run's last log line
        last_train = next((r for r in reversed(records) if 'loss' in r and r['step'] <= step), {})
    step_s = sum(r['interval_steps'] * tokens_per_step / r['throughput'] for r in records if 'interval_steps' in r)
    run_steps = sum(r['interval_steps'] for r in records if 'interval_steps' in r)
    summary = dict(
        status=status, step=step, total_steps=total_steps,
        train_loss=last_train.get('loss'), **last_eval,
        params=param_counts, model_state_size=model_state_size, flops_per_step=flops_per_step, flops=final['flops'],
        tokens_per_step=tokens_per_step, tokens=final['tokens'],
        scaling_flops=6.0 * param_counts['with_head'] * final['tokens'], flop_convention=flops.FLOP_CONVENTION,
        tokens_per_s=run_steps * tokens_per_step / step_s if step_s else None,  # over every logged interval
        mfu=run_steps * flops_per_step / step_s / peak if step_s and peak else None,
        compile_time_s=compile_s, wall_time_s=final['wall_time_s'],
        eval_time_s=timer.apart_s['eval'], checkpoint_time_s=timer.apart_s['checkpoint'],
        topology=topology, model=cfg.model.name, data=source.describe(),
    )
    if diverged_at is not None:
        summary['diverged_at_step'] = diverged_at
    if 'train_tokens' in summary['data']:  # passes over the training split
        summary['epochs'] = final['tokens'] / summary['data']['train_tokens']
    if is_main:
        metrics.write_json(workdir / 'summary.json', summary)
    figures = ', '.join(f'{name} {summary[key]:.4f}' for name, key in (('train loss', 'train_loss'),
                        ('eval loss', 'eval_loss')) if isinstance(summary.get(key), float))
    progress.note(f'{status} at step {step}: ' + (f'{figures}; ' if figures else '') +
                  f'summary in {workdir / "summary.json"}')
    return summary
