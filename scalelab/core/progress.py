"""Progress the way people expect: a tqdm bar with ETA on a terminal, plain lines elsewhere.

A bar shows only where someone watches: stderr is a TTY and CI is not 'true'.
In a log file or CI, training prints one line per log interval instead and
the other bars stay silent; metrics.jsonl and the event files hold the full
record either way.
"""
from __future__ import annotations

import math
import os
import sys
import time

from tqdm.auto import tqdm


def bars_enabled(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    in_ci = os.environ.get('CI', '').strip().lower() in ('true', '1', 'yes')
    return not in_ci and hasattr(stream, 'isatty') and stream.isatty()


def bar(iterable=None, *, total: int | None = None, desc: str = '', unit: str = 'it', enabled: bool = True):
    """A tqdm bar over `iterable` (or updated by hand), silent unless `bars_enabled()`."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not (enabled and bars_enabled()),
                dynamic_ncols=True, leave=False)


class Progress:
    """Training progress: a bar (step, loss, tok/s, MFU, ETA) on a terminal, else one
    line per log interval. Notes and warnings print above the bar."""

    def __init__(self, total_steps: int, start_step: int, *, enabled: bool, stream=None):
        self.total, self.enabled = total_steps, enabled
        self.stream = sys.stdout if stream is None else stream
        self.t0, self.step0 = time.perf_counter(), start_step
        self.bar = None

    def restart_clock(self, step: int) -> None:
        """Measure the ETA from here (after compilation); the bar starts here."""
        self.t0, self.step0 = time.perf_counter(), step
        if self.enabled and bars_enabled():
            self.bar = tqdm(total=self.total, initial=step, desc='train', unit='step', dynamic_ncols=True)

    def report(self, step: int, fields: dict) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(fields, refresh=True)
            return
        elapsed, done = time.perf_counter() - self.t0, step - self.step0
        eta = (self.total - step) * elapsed / done if done > 0 else math.nan
        parts = [f'step {step}/{self.total}', *(f'{key} {value}' for key, value in fields.items()),
                 f'ETA {format_duration(eta)}']
        print(' | '.join(parts), file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if self.enabled:
            self._print(message, self.stream)

    def warn(self, message: str) -> None:
        if self.enabled:
            self._print(f'warning: {message}', sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _print(self, message: str, stream) -> None:
        if self.bar is not None:
            tqdm.write(message, file=stream)
        else:
            print(message, file=stream, flush=True)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return '?'
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h}h{m:02d}m' if h else (f'{m}m{s:02d}s' if m else f'{s}s')
