"""Byte-level text corpus: files -> uint8 token arrays, split into train/eval by file.

The default corpus is the Python standard library's own source, found through
`sysconfig`, so a run needs no download.
"""
from __future__ import annotations

import dataclasses
import os
import sysconfig
import zlib
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from scalelab.errors import ConfigError
from scalelab.tasks import DataSpec

VOCAB_SIZE = 256  # one token per byte
_SKIP_DIRS = {'site-packages', 'dist-packages', '__pycache__'}


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        name='text',
        path='',             # '' = the Python stdlib source; a directory, a file, or files joined by ','
        pattern='*.py',      # files taken from a directory (recursive glob)
        eval_fraction=0.05,  # share of files held out for evaluation
        seq_len=256,
        train_examples=0,    # > 0: train on only this many fixed windows (e.g. to overfit)
    ))


def spec(cfg) -> DataSpec:
    return DataSpec('lm', (cfg.seq_len,), VOCAB_SIZE)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()['stdlib'])


def list_files(path: str, pattern: str) -> list[Path]:
    """Files named by `path`: '' (the stdlib source), a directory searched
    recursively for `pattern`, one file, or several files joined by ','."""
    if ',' in path:
        return [Path(p.strip()) for p in path.split(',') if p.strip()]
    root = Path(path) if path else stdlib_dir()
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob(pattern)
                  if p.is_file() and not _SKIP_DIRS.intersection(p.relative_to(root).parts))


def split_files(files: list[Path], eval_fraction: float) -> tuple[list[Path], list[Path]]:
    """Hold out the files with the smallest CRC32 of their name: stable across
    machines and Python versions, and unchanged when unrelated files are added."""
    ranked = sorted(files, key=lambda p: (zlib.crc32('/'.join(p.parts[-2:]).encode()), str(p)))
    n_eval = min(max(1, round(eval_fraction * len(files))), len(files) - 1)
    held_out = set(ranked[:n_eval])
    return [p for p in files if p not in held_out], [p for p in files if p in held_out]


def read_tokens(files: list[Path]) -> np.ndarray:
    return np.frombuffer(b''.join(p.read_bytes() for p in files), dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class TextSource:
    """Train and eval byte streams; batches are windows at offsets drawn from (seed, step)."""
    train_tokens: np.ndarray
    eval_tokens: np.ndarray
    seq_len: int
    global_batch: int
    seed: int
    n_train_files: int
    n_eval_files: int
    train_examples: int = 0

    bytes_per_token = 1.0

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        if self.train_examples:  # a fixed set of windows, visited in turn
            starts = _starts(self.train_tokens.size, self.seq_len, self.train_examples, (self.seed, 4))
            positions = (step * self.global_batch + np.arange(self.global_batch)) % self.train_examples
            return _cut(self.train_tokens, starts[positions][rows], self.seq_len)
        return _windows(self.train_tokens, self.seq_len, self.global_batch, (self.seed, 0, step), rows)

    def eval_batches(self, requested: int) -> int:
        return requested

    def eval_batch(self, index: int, rows: slice) -> dict[str, np.ndarray]:
        return _windows(self.eval_tokens, self.seq_len, self.global_batch, (self.seed, 1, index), rows)

    def describe(self) -> dict:
        return dict(train_bytes=int(self.train_tokens.size), eval_bytes=int(self.eval_tokens.size),
                    train_files=self.n_train_files, eval_files=self.n_eval_files)


def _windows(tokens: np.ndarray, seq_len: int, global_batch: int, key: tuple[int, ...],
             rows: slice) -> dict[str, np.ndarray]:
    """Rows `rows` of the global batch for `key`: every process draws the same
    offsets and reads only its own rows."""
    return _cut(tokens, _starts(tokens.size, seq_len, global_batch, key)[rows], seq_len)


def _starts(size: int, seq_len: int, n: int, key: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(key).integers(0, size - seq_len, size=n)


def _cut(tokens: np.ndarray, starts_B: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
    window_BxL1 = tokens[starts_B[:, None] + np.arange(seq_len + 1)].astype(np.int32)
    return {'inputs': window_BxL1[:, :-1], 'targets': window_BxL1[:, 1:]}


def load(cfg, global_batch: int, seed: int) -> TextSource:
    files = list_files(cfg.path, cfg.pattern)
    where = f'data.path={cfg.path!r}' + ('' if cfg.path else f' (the stdlib at {stdlib_dir()})')
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ConfigError([f'{where}: no such file: {", ".join(missing[:5])}'])
    if len(files) < 2:
        raise ConfigError([f'{where}, data.pattern={cfg.pattern!r}: found {len(files)} file(s); '
                           'a train/eval split by file needs at least 2'])
    train_files, eval_files = split_files(files, cfg.eval_fraction)
    train, held_out = read_tokens(train_files), read_tokens(eval_files)
    for split, tokens in (('train', train), ('eval', held_out)):
        if tokens.size <= cfg.seq_len:
            raise ConfigError([f'{where}: the {split} split has {tokens.size} bytes, fewer than '
                               f'data.seq_len + 1 = {cfg.seq_len + 1}'])
    return TextSource(train, held_out, cfg.seq_len, global_batch, seed, len(train_files), len(eval_files),
                      cfg.train_examples)


def validate(cfg) -> list[str]:
    problems = []
    if cfg.path and ',' not in cfg.path and not os.path.exists(cfg.path):
        problems.append(f'data.path={cfg.path!r}: no such file or directory '
                        "(give a directory, a file, files joined by ',', or '' for the stdlib source)")
    if not 0.0 < cfg.eval_fraction < 1.0:
        problems.append(f'data.eval_fraction={cfg.eval_fraction}: must be in (0, 1)')
    if cfg.seq_len <= 0:
        problems.append(f'data.seq_len={cfg.seq_len}: must be positive')
    if cfg.train_examples < 0:
        problems.append(f'data.train_examples={cfg.train_examples}: must be non-negative (0 = all)')
    return problems
