"""One training run in a workdir: resume, loop, evaluate, checkpoint, summarize.

Workdir: config.json (resolved config), metrics.jsonl, checkpoints/ (orbax),
summary.json. Starting the same command again resumes from the last complete
checkpoint; SIGTERM or Ctrl-C saves a checkpoint and returns cleanly.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from scalelab import checkpoint, config, export, flops, metrics, models, parallel, tasks, train
from scalelab import data as data_lib
from scalelab.data import pipeline
from scalelab.errors import ConfigError

# Sections that must match the saved config.json to resume a workdir.
RESUME_MUST_MATCH = ('seed', 'model', 'data')


@contextlib.contextmanager
def stop_on_signals():
    """Yields a flag set by SIGTERM/SIGINT; the loop checks it between steps.

    With several processes, each would stop at its own step and leave the
    others waiting in a collective; there JAX's preemption service takes
    SIGTERM instead and names one step for all (see `should_stop`).
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
        yield flag
        return
    previous = {sig: signal.signal(sig, lambda *_: flag.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def should_stop(flag: threading.Event, step: int) -> bool:
    if jax.process_count() > 1:
        return multihost_utils.reached_preemption_sync_point(step)
    return flag.is_set()


def initial_params(source: str, abstract_params, shardings):
    """Fine-tuning: another run's (or file's) parameters, laid out and sharded for this model."""
    try:
        params = export.arrange(export.load_params_flat(source), abstract_params)
    except ValueError as e:
        raise ConfigError([f'train.init_from={source!r}: {e}']) from None
    return jax.tree.map(lambda p, s: jax.make_array_from_callback(p.shape, s, lambda index: p[index]),
                        params, shardings)


def check_same_run(path: Path, cfg) -> None:
    """Refuse to resume a workdir that holds a different model or data."""
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    now = cfg.to_dict()
    diffs = [f'{key}: saved {saved.get(key)!r}, now {now[key]!r}'
             for key in RESUME_MUST_MATCH if saved.get(key) != now[key]]
    if diffs:
        raise ConfigError([f'workdir {path.parent} holds a run with a different config '
                           f'({"; ".join(diffs)}); use a new --workdir'])


def run(cfg, workdir: str | Path, devices: list[jax.Device] | None = None,
        profile_steps: tuple[int, int] | None = None) -> dict:
    """Train (or resume) the run described by `cfg` in `workdir` on `devices`
    (default: all); returns the summary. `profile_steps=(a, b)` writes a JAX
    profiler trace of steps a..b-1 to workdir/profile."""
    session_start = time.perf_counter()
    devices = jax.devices() if devices is None else list(devices)
    cfg = config.resolve(cfg, len(devices))
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    check_same_run(workdir / 'config.json', cfg)
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
    start = ckpt.latest_step()
    if start is None:
        start, prior = 0, {'wall_time_s': 0.0, 'tokens': 0, 'flops': 0.0}
        state = jax.jit(prepared.init, out_shardings=shardings)()
        if cfg.train.init_from:
            state['params'] = initial_params(cfg.train.init_from, abstract_state['params'], shardings['params'])
            progress.note(f'parameters from {cfg.train.init_from} (new optimizer state)')
    else:
        state, record = ckpt.restore(start, checkpoint.abstract_target(abstract_state, shardings))
        prior = record
        progress.note(f'resumed from step {start} (checkpoint in {workdir / "checkpoints"})')

    def abstract_batch(one_row):
        return {k: jax.ShapeDtypeStruct((batch_size, *v.shape[1:]), v.dtype) for k, v in one_row.items()}

    compile_start = time.perf_counter()
    train_fn, eval_fn = train.compile_steps(prepared.spec, mesh, shardings, abstract_state,
                                            abstract_batch(source.train_batch(0, slice(0, 1))),
                                            abstract_batch(source.eval_batch(0, slice(0, 1))))
    compile_s = time.perf_counter() - compile_start

    param_counts = flops.count_params(abstract_state['params'], models.family(cfg.model.name).EMBEDDING_PARAMS)
    model_state_size = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state['model_state']))
    flops_per_step = flops.train_flops_per_step(cfg.model, spec, batch_size)
    tokens_per_step = batch_size * config.tokens_per_example(spec)
    peak = flops.total_peak_flops(devices, cfg.train.compute_dtype)
    topology = dict(mesh=dict(cfg.mesh), num_devices=len(devices), num_processes=jax.process_count(),
                    platform=devices[0].platform, device_kind=devices[0].device_kind)
    log = metrics.MetricsLog(workdir / 'metrics.jsonl', enabled=is_main, resume_step=start)
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

    status, last_train, last_eval = 'completed', {}, {}
    pending, interval_start = [], time.perf_counter()
    timed_steps, timed_s = 0, 0.0
    step = start
    progress.restart_clock(start)
    with stop_on_signals() as stop:
        while step < total_steps:
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
                seconds = time.perf_counter() - interval_start
                timed_steps, timed_s = timed_steps + len(values), timed_s + seconds
                last_train = {
                    'step': step,
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
                pending = []
                if not math.isfinite(last_train['loss']):
                    status = 'diverged'
                    progress.note(f'loss is {last_train["loss"]} at step {step}: stopping')
                    break
                interval_start = time.perf_counter()
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total_steps:
                last_eval = evaluate(step)
                interval_start = time.perf_counter()
            ckpt.save(step, state, record_at(step))
            if should_stop(stop, step):
                status = 'preempted'
                progress.note(f'stop requested: checkpointing step {step} and exiting')
                break
        if status != 'diverged' and ckpt.latest_step() != step:
            ckpt.save(step, state, record_at(step), force=True)
        ckpt.wait()
        if status == 'completed':
            last_eval = evaluate(step)
    ckpt.close()

    final = record_at(step)
    summary = dict(
        status=status, step=step, total_steps=total_steps,
        train_loss=last_train.get('loss'), **last_eval,
        params=param_counts, model_state_size=model_state_size, flops_per_step=flops_per_step, flops=final['flops'],
        tokens_per_step=tokens_per_step, tokens=final['tokens'],
        tokens_per_s=timed_steps * tokens_per_step / timed_s if timed_s else None,
        mfu=timed_steps * flops_per_step / timed_s / peak if timed_s and peak else None,
        compile_time_s=compile_s, wall_time_s=final['wall_time_s'],
        topology=topology, model=cfg.model.name, data=source.describe(),
    )
    if 'train_tokens' in summary['data']:  # passes over the training split
        summary['epochs'] = final['tokens'] / summary['data']['train_tokens']
    if is_main:
        metrics.write_json(workdir / 'summary.json', summary)
    progress.note(f'{status} at step {step}: train loss {summary["train_loss"]}, '
                  f'eval loss {summary.get("eval_loss")}; summary in {workdir / "summary.json"}')
    return summary
