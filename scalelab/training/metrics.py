"""metrics.jsonl (from process 0 only) and the step timer that gives its throughput."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np

from scalelab.core import files

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
            files.write_atomic(self.path, ''.join(line + '\n' for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open('a') as f:
                f.write(json.dumps(record) + '\n')

    def records(self) -> list[dict]:
        """Every line written so far (process 0; others have none)."""
        return read_jsonl(self.path) if self.enabled and self.path.exists() else []


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


X_KEYS = {'steps': 'step', 'tokens': 'tokens', 'flops': 'flops'}  # an x axis -> its metrics.jsonl field


def curves(workdir: Path, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (x, loss), 'eval': (x, eval_loss)} of a workdir against the metrics.jsonl field
    `key` (step, tokens or flops); an evaluation's tokens and FLOPs are read off the training
    lines at its step."""
    path = Path(workdir) / 'metrics.jsonl'
    if not path.exists():
        raise FileNotFoundError(f'{workdir}: no metrics.jsonl (not a run workdir, or no step logged yet)')
    records = read_jsonl(path)
    train = [r for r in records if 'loss' in r]
    evals = [r for r in records if 'eval_loss' in r]
    train_step = np.array([r['step'] for r in train], float)
    train_x = np.array([r[key] for r in train], float)
    eval_step = np.array([r['step'] for r in evals], float)
    eval_x = eval_step if key == 'step' or not train else np.interp(eval_step, train_step, train_x)
    return {'train': (train_x, np.array([r['loss'] for r in train], float)),
            'eval': (eval_x, np.array([r['eval_loss'] for r in evals], float))}


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
