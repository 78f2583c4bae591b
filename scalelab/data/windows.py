"""Next-token windows over token streams: training windows drawn from (seed,
step), and one fixed evaluation set of contiguous windows.

A stream is an in-memory array (`ArrayStream`) or flat token shards read with
`os.pread` (`ShardStream`): a batch reads only its own windows, so resident
memory does not grow with the corpus. Windows never cross a shard boundary.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np


class ArrayStream:
    """Tokens held in memory (a small byte corpus)."""

    def __init__(self, tokens: np.ndarray):
        self.tokens = tokens
        self.size = int(tokens.size)

    def n_starts(self, length: int) -> int:
        return self.size - length + 1

    def read(self, starts_B: np.ndarray, length: int) -> np.ndarray:
        return self.tokens[starts_B[:, None] + np.arange(length)].astype(np.int32)


class ShardStream:
    """Flat little-endian token files, one after another; a window lies inside one file.

    A window start is an index into the starts of all files in turn
    (file i has size_i - length + 1 of them), mapped to (file, offset)."""

    def __init__(self, paths: list[Path], sizes: list[int], dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self.sizes = [int(s) for s in sizes]
        self.size = sum(self.sizes)
        self.fds = [os.open(p, os.O_RDONLY) for p in paths]

    def __del__(self):
        for fd in getattr(self, 'fds', []):
            os.close(fd)

    def _starts_per_file(self, length: int) -> np.ndarray:
        return np.maximum(np.asarray(self.sizes) - length + 1, 0)

    def n_starts(self, length: int) -> int:
        return int(self._starts_per_file(length).sum())

    def read(self, starts_B: np.ndarray, length: int) -> np.ndarray:
        ends = np.cumsum(self._starts_per_file(length))
        files_B = np.searchsorted(ends, starts_B, side='right')
        offsets_B = starts_B - np.concatenate([[0], ends])[files_B]
        item = self.dtype.itemsize
        out = np.empty((len(starts_B), length), np.int32)
        for row, (f, offset) in enumerate(zip(files_B, offsets_B)):
            raw = os.pread(self.fds[f], length * item, int(offset) * item)
            out[row] = np.frombuffer(raw, self.dtype)
        return out


@dataclasses.dataclass(frozen=True)
class LMWindows:
    """A next-token source (see scalelab.data): inputs are a window's first
    seq_len tokens, targets the same shifted by one.

    Evaluation is the first `eval_tokens // seq_len` windows laid end to end
    from the start of the eval stream: the same examples whatever the seed,
    the batch size, the mesh or the sweep point."""
    train: ArrayStream | ShardStream
    eval: ArrayStream | ShardStream
    seq_len: int
    global_batch: int
    seed: int
    eval_tokens: int
    bytes_per_token: float
    train_examples: int = 0   # > 0: a fixed set of training windows, visited in turn

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        n = self.train.n_starts(self.seq_len + 1)
        if self.train_examples:
            starts = np.random.default_rng((self.seed, 4)).integers(0, n, size=self.train_examples)
            starts_B = starts[(step * self.global_batch + np.arange(self.global_batch)) % self.train_examples]
        else:  # every process draws the same offsets and reads only its own rows
            starts_B = np.random.default_rng((self.seed, 0, step)).integers(0, n, size=self.global_batch)
        return _split(self.train.read(starts_B[rows], self.seq_len + 1))

    @property
    def eval_windows(self) -> int:
        return eval_window_count(self.eval, self.seq_len, self.eval_tokens)

    def eval_batches(self) -> int:
        return math.ceil(self.eval_windows / self.global_batch)

    def eval_batch(self, index: int, rows: slice) -> dict[str, np.ndarray]:
        """Rows of the evaluation windows in order; past the last one, padding with weight 0."""
        window_B = index * self.global_batch + np.arange(self.global_batch)
        real_B = window_B < self.eval_windows
        starts_B = np.where(real_B, window_B, 0) * self.seq_len
        batch = _split(self.eval.read(starts_B[rows], self.seq_len + 1))
        batch['weights'] = np.repeat(real_B[rows, None], self.seq_len, axis=1).astype(np.float32)
        return batch

    def eval_targets(self) -> np.ndarray:
        """Every target token the evaluation scores, in order."""
        starts = np.arange(self.eval_windows) * self.seq_len
        return self.eval.read(starts, self.seq_len + 1)[:, 1:]


def eval_window_count(stream, seq_len: int, eval_tokens: int) -> int:
    return max(0, min(eval_tokens // seq_len, (stream.n_starts(seq_len + 1) - 1) // seq_len + 1))


def _split(window_BxL1: np.ndarray) -> dict[str, np.ndarray]:
    return {'inputs': window_BxL1[:, :-1], 'targets': window_BxL1[:, 1:]}
