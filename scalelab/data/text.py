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

from scalelab.core.errors import ConfigError
from scalelab.core.tasks import DataSpec
from scalelab.data import windows
from scalelab.data.tokenizer import byte_level

VOCAB_SIZE = 256  # one token per byte
# Directories a search for source files leaves out: installed third-party packages and bytecode caches.
SKIP_DIRS = ('site-packages', 'dist-packages', '__pycache__')


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        name='text',
        path='',             # '' = the Python stdlib source; a directory, a file, or files joined by ','
        pattern='*.py',      # files taken from a directory (recursive glob)
        eval_fraction=0.05,  # share of files held out for evaluation
        seq_len=256,
        eval_tokens=262144,  # the evaluation set: this many tokens of the eval split's start, in windows
        train_examples=0,    # > 0: train on only this many fixed windows (e.g. to overfit)
    ))


def spec(cfg) -> DataSpec:
    return DataSpec('lm', (cfg.seq_len,), VOCAB_SIZE, vocab_source='the byte-level text (data.name=\'text\')')


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()['stdlib'])


def list_files(path: str, pattern: str) -> list[Path]:
    """Files named by `path`: '' (the stdlib source), a directory searched
    recursively for `pattern` (leaving out SKIP_DIRS), one file, or several files joined by ','."""
    if ',' in path:
        return [Path(p.strip()) for p in path.split(',') if p.strip()]
    root = Path(path) if path else stdlib_dir()
    if root.is_file():
        return [root]
    return search(root, pattern, SKIP_DIRS)[0]


def search(root: Path, pattern: str, skip_dirs=SKIP_DIRS) -> tuple[list[Path], dict[str, int]]:
    """(files under `root` matching `pattern`, {skipped directory name: files left out under it})."""
    found, skipped = [], {}
    for p in sorted(root.rglob(pattern)):
        if not p.is_file():
            continue
        hit = next((part for part in p.relative_to(root).parts if part in skip_dirs), None)
        if hit is None:
            found.append(p)
        else:
            skipped[hit] = skipped.get(hit, 0) + 1
    return found, skipped


def split_files(files: list[Path], eval_fraction: float) -> tuple[list[Path], list[Path]]:
    """Hold out the files with the smallest CRC32 of their name (see `held_out`)."""
    held = held_out([file_key(p) for p in files], eval_fraction, [str(p) for p in files])
    return [p for i, p in enumerate(files) if i not in held], [p for i, p in enumerate(files) if i in held]


def file_key(path: Path) -> str:
    """A file's name for the split: its directory and name, the same on every machine."""
    return '/'.join(path.parts[-2:])


def held_out(keys: list[str], eval_fraction: float, tiebreak: list[str] | None = None) -> set[int]:
    """Indices of the round(eval_fraction * n) keys (at least 1, at most n - 1) with the
    smallest CRC32 (equal ones ordered by `tiebreak`): stable across machines and Python
    versions, independent of order, and unchanged when unrelated keys are added."""
    tiebreak = keys if tiebreak is None else tiebreak
    ranked = sorted(range(len(keys)), key=lambda i: (zlib.crc32(keys[i].encode()), tiebreak[i]))
    n_eval = min(max(1, round(eval_fraction * len(keys))), len(keys) - 1)
    return set(ranked[:n_eval])


def read_tokens(files: list[Path]) -> np.ndarray:
    return np.frombuffer(b''.join(p.read_bytes() for p in files), dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class TextSource(windows.LMWindows):
    """Byte windows of the train and eval files (held in memory: a source-code corpus is small)."""
    n_train_files: int = 0
    n_eval_files: int = 0

    tokenizer = byte_level()

    def describe(self) -> dict:
        return dict(train_tokens=self.train.size, eval_tokens=self.eval_windows * self.seq_len,
                    train_files=self.n_train_files, eval_files=self.n_eval_files, tokenizer='bytes')


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
    return TextSource(windows.ArrayStream(train), windows.ArrayStream(held_out), cfg.seq_len, global_batch, seed,
                      cfg.eval_tokens, 1.0, cfg.train_examples, n_train_files=len(train_files),
                      n_eval_files=len(eval_files))


def validate(cfg) -> list[str]:
    problems = []
    if cfg.path and ',' not in cfg.path and not os.path.exists(cfg.path):
        problems.append(f'data.path={cfg.path!r}: no such file or directory '
                        "(give a directory, a file, files joined by ',', or '' for the stdlib source)")
    if not 0.0 < cfg.eval_fraction < 1.0:
        problems.append(f'data.eval_fraction={cfg.eval_fraction}: must be in (0, 1)')
    if cfg.seq_len <= 0:
        problems.append(f'data.seq_len={cfg.seq_len}: must be positive')
    if cfg.eval_tokens < cfg.seq_len:
        problems.append(f'data.eval_tokens={cfg.eval_tokens}: must be at least data.seq_len={cfg.seq_len} '
                        '(one evaluation window)')
    if cfg.train_examples < 0:
        problems.append(f'data.train_examples={cfg.train_examples}: must be non-negative (0 = all)')
    return problems
