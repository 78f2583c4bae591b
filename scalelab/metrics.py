"""metrics.jsonl and the console progress line (both from process 0 only)."""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

clock = time.perf_counter  # what StepTimer reads (tests put a fake clock here)


class MetricsLog:
    """Append-only JSONL, one object a line, each with its 'step'.

    On resume the lines a killed run wrote past its last checkpoint are
    dropped, so the file reads as one uninterrupted run; so is a line a kill
    left half-written (with a warning naming it).
    """

    def __init__(self, path: Path, *, enabled: bool, resume_step: int, warn=None):
        self.path, self.enabled = Path(path), enabled
        if enabled and self.path.exists():
            kept = []
            for number, line in enumerate(self.path.read_text().splitlines(), 1):
                try:
                    record = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    (warn or print)(f'{self.path}: line {number} is not whole JSON (a kill mid-write?); dropped: '
                                    f'{line[:60]!r}')
                    continue
                if record is not None and record['step'] <= resume_step:
                    kept.append(line)
            tmp = self.path.with_suffix('.tmp')
            tmp.write_text(''.join(line + '\n' for line in kept))
            tmp.replace(self.path)

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open('a') as f:
                f.write(json.dumps(record) + '\n')

    def records(self) -> list[dict]:
        """Every line written so far (process 0; others have none)."""
        return read_jsonl(self.path) if self.enabled and self.path.exists() else []


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_json(path: Path, obj: dict) -> None:
    """Atomic write: a reader never sees half a file, even if we are killed."""
    tmp = Path(path).with_suffix('.tmp')
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + '\n')
    tmp.replace(path)


class StepTimer:
    """Seconds spent on training steps, with evaluation and checkpoint time kept apart.

    `lap()` returns the step time since the previous lap, less whatever ran
    inside `apart(...)` in between, so a log line's throughput counts exactly
    the steps it reports. The caller makes the steps finish before an
    `apart` (block_until_ready), so their compute lands in the step time."""

    def __init__(self):
        self.mark, self.excluded = clock(), 0.0
        self.apart_s = {'eval': 0.0, 'checkpoint': 0.0}

    @contextlib.contextmanager
    def apart(self, what: str):
        start = clock()
        try:
            yield
        finally:
            seconds = clock() - start
            self.excluded += seconds
            self.apart_s[what] += seconds

    def lap(self) -> float:
        now = clock()
        seconds = now - self.mark - self.excluded
        self.mark, self.excluded = now, 0.0
        return seconds


class Progress:
    """One console line per log interval: step, loss, throughput, MFU, ETA."""

    def __init__(self, total_steps: int, start_step: int, *, enabled: bool, stream=sys.stdout):
        self.total, self.enabled, self.stream = total_steps, enabled, stream
        self.t0, self.step0 = time.perf_counter(), start_step

    def restart_clock(self, step: int) -> None:
        """Measure the ETA from here (after compilation)."""
        self.t0, self.step0 = time.perf_counter(), step

    def report(self, step: int, fields: dict) -> None:
        if not self.enabled:
            return
        elapsed, done = time.perf_counter() - self.t0, step - self.step0
        eta = (self.total - step) * elapsed / done if done > 0 else math.nan
        parts = [f'step {step}/{self.total}']
        for key, value in fields.items():
            parts.append(f'{key} {value}')
        parts.append(f'ETA {format_duration(eta)}')
        print(' | '.join(parts), file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if self.enabled:
            print(message, file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        if self.enabled:
            print(f'warning: {message}', file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return '?'
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h}h{m:02d}m' if h else (f'{m}m{s:02d}s' if m else f'{s}s')
