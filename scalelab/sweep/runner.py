"""Run sweep points as `scalelab.run` subprocesses, K at a time.

Each point is an ordinary run workdir, so a point that was cut short resumes
from its checkpoint and a finished point (summary.json with a final status)
is skipped. SIGTERM/Ctrl-C is passed on to the running points, which save a
checkpoint and exit; the next invocation picks up where they stopped. A point
dies with the driver (SIGTERM, so it checkpoints), and a point whose workdir is
still locked by an earlier driver's process is waited for, never run twice.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from scalelab.core import progress
from scalelab.core.errors import EXIT_DIVERGED
from scalelab.core.progress import format_duration
from scalelab.core import workdir as workdir_lib
from scalelab.sweep import points as points_lib

FINAL_STATUSES = ('completed', 'diverged')


def die_with_parent() -> None:
    """In a point's process: SIGTERM when the driver dies, even by SIGKILL (Linux), so the
    point checkpoints and exits instead of training on as an orphan."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def point_dir(workdir: Path, point: points_lib.Point) -> Path:
    return Path(workdir) / 'points' / point.name


def read_summary(directory: Path) -> dict | None:
    path = directory / 'summary.json'
    return json.loads(path.read_text()) if path.exists() else None


def is_finished(directory: Path, point: points_lib.Point) -> bool:
    summary = read_summary(directory)
    return bool(summary and summary['status'] in FINAL_STATUSES
                and summary['total_steps'] == point.config.train.steps)


def run(sweep, points: list[points_lib.Point], workdir: Path, *, parallel: int = 1,
        extra_args: tuple[str, ...] = (), log=print, poll_s: float = 0.2) -> dict[str, str]:
    """Run the unfinished points; returns {name: outcome} for every point."""
    outcome = {p.name: 'skipped (done)' for p in points if is_finished(point_dir(workdir, p), p)}
    todo = [p for p in points if p.name not in outcome]
    for name in outcome:
        log(f'skip {name}: finished earlier')
    total_flops = sum(points_lib.planned_flops(p) for p in todo)
    done_flops, start = 0.0, time.monotonic()
    active: dict[str, tuple[subprocess.Popen, float, points_lib.Point]] = {}
    stop = {'requested': False}

    def on_signal(signum, _frame):
        stop['requested'] = True
        for proc, _, _ in active.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    bar = progress.bar(total=total_flops, desc='sweep', unit='FLOP')  # weighted by FLOPs, as the ETA is
    bar.unit_scale = True
    if not bar.disable:
        log = bar.write  # lines above the bar
    try:
        queue = list(todo)
        while queue or active:
            while queue and len(active) < parallel and not stop['requested']:
                point = queue.pop(0)
                directory = point_dir(workdir, point)
                directory.mkdir(parents=True, exist_ok=True)
                holder = workdir_lib.owner(directory)
                if holder is not None:  # an earlier driver's point still trains: never a second process
                    log(f'wait  {point.name}: still trained by {workdir_lib.describe(holder)}')
                    while workdir_lib.owner(directory) is not None and not stop['requested']:
                        time.sleep(poll_s)
                with (directory / 'log.txt').open('a') as out:
                    proc = subprocess.Popen(points_lib.run_command(sweep, point, directory, extra_args),
                                            stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy(),
                                            preexec_fn=die_with_parent)
                active[point.name] = (proc, time.monotonic(), point)
                log(f'start {point.name}: {_describe(point)} ({len(outcome) + len(active)}/{len(points)} started)')
            if stop['requested'] and queue:
                outcome.update({p.name: 'not started' for p in queue})
                queue = []
            time.sleep(poll_s)
            for name, (proc, started, point) in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[name]
                summary = read_summary(point_dir(workdir, point))
                status = summary['status'] if summary else 'no summary'
                if proc.returncode not in (0, EXIT_DIVERGED):
                    status = f'failed (exit {proc.returncode}; see {point_dir(workdir, point) / "log.txt"})'
                outcome[name] = status
                done_flops += points_lib.planned_flops(point)
                bar.update(points_lib.planned_flops(point))
                elapsed = time.monotonic() - start
                eta = elapsed * (total_flops - done_flops) / done_flops if done_flops else float('nan')
                loss = summary.get(sweep.fit.metric) if summary else None
                log(f'end   {name}: {status} in {format_duration(time.monotonic() - started)}'
                    + (f', {sweep.fit.metric} {loss:.4f}' if isinstance(loss, float) else '')
                    + f' | sweep ETA {format_duration(eta)}')
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return outcome


def _describe(point: points_lib.Point) -> str:
    m = point.config.model
    return (f'd_model={m.d_model} n_layers={m.n_layers}, {point.config.train.steps} steps, '
            f'{points_lib.planned_flops(point):.3g} FLOPs')
