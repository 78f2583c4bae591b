"""Regression on a random teacher network: a clean target for parameter-count scaling.

Inputs x ~ N(0, I); targets are a fixed random MLP's outputs (plus optional
noise). The teacher's size is a config key, so the task's difficulty is too.
Training examples are fresh every step, drawn from (seed, step): unlimited
data, so loss against student size measures capacity alone.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from ml_collections import ConfigDict

from scalelab.core.tasks import DataSpec

ACTIVATIONS = {'tanh': np.tanh, 'relu': lambda x: np.maximum(x, 0.0)}


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        name='teacher',
        in_dim=16,
        out_dim=1,
        width=64,            # teacher's hidden width
        depth=2,             # teacher's hidden layers
        activation='tanh',
        noise=0.0,           # std of Gaussian noise added to training targets
        teacher_seed=1234,   # fixed across runs, so every student learns the same function
        eval_examples=4096,
        train_examples=0,    # > 0: a fixed training set of this many examples
    ))


def spec(cfg) -> DataSpec:
    return DataSpec('regression', (cfg.in_dim,), cfg.out_dim)


def validate(cfg) -> list[str]:
    problems = [f'data.{k}={cfg[k]}: must be positive' for k in ('in_dim', 'out_dim', 'width', 'depth',
                                                                 'eval_examples') if cfg[k] <= 0]
    if cfg.activation not in ACTIVATIONS:
        problems.append(f'data.activation={cfg.activation!r}: not one of {", ".join(ACTIVATIONS)}')
    if cfg.noise < 0:
        problems.append(f'data.noise={cfg.noise}: must be non-negative')
    if cfg.train_examples < 0:
        problems.append(f'data.train_examples={cfg.train_examples}: must be non-negative (0 = unlimited)')
    return problems


@dataclasses.dataclass(frozen=True)
class Teacher:
    weights: tuple[np.ndarray, ...]
    activation: str

    @classmethod
    def random(cls, cfg) -> 'Teacher':
        rng = np.random.default_rng(cfg.teacher_seed)
        dims = [cfg.in_dim] + [cfg.width] * cfg.depth + [cfg.out_dim]
        return cls(tuple(rng.normal(0, 1 / np.sqrt(a), size=(a, b)).astype(np.float32)
                         for a, b in zip(dims[:-1], dims[1:])), cfg.activation)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for w in self.weights[:-1]:
            x = ACTIVATIONS[self.activation](x @ w)
        return x @ self.weights[-1]


@dataclasses.dataclass(frozen=True)
class TeacherSource:
    teacher: Teacher
    in_dim: int
    noise: float
    global_batch: int
    seed: int
    eval_x: np.ndarray
    train_examples: int

    bytes_per_token = None

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        if self.train_examples:
            fixed = np.random.default_rng((self.seed, 5)).normal(size=(self.train_examples, self.in_dim))
            index = (step * self.global_batch + np.arange(self.global_batch)) % self.train_examples
            x = fixed[index][rows].astype(np.float32)
            return {'inputs': x, 'targets': self.teacher(x)}
        rng = np.random.default_rng((self.seed, 0, step))
        x = rng.normal(size=(self.global_batch, self.in_dim)).astype(np.float32)
        y = self.teacher(x) + self.noise * rng.normal(size=(self.global_batch, 1)).astype(np.float32)
        return {'inputs': x[rows], 'targets': y[rows].astype(np.float32)}

    def eval_batches(self) -> int:
        return -(-len(self.eval_x) // self.global_batch)

    def eval_batch(self, index: int, rows: slice) -> dict[str, np.ndarray]:
        position = index * self.global_batch + np.arange(self.global_batch)
        real = position < len(self.eval_x)
        x = self.eval_x[np.where(real, position, 0)][rows]
        return {'inputs': x, 'targets': self.teacher(x), 'weights': real[rows].astype(np.float32)}

    def describe(self) -> dict:
        return dict(teacher_params=int(sum(w.size for w in self.teacher.weights)),
                    eval_examples=int(len(self.eval_x)))


def load(cfg, global_batch: int, seed: int) -> TeacherSource:
    eval_x = np.random.default_rng((cfg.teacher_seed, 1)).normal(size=(cfg.eval_examples, cfg.in_dim))
    return TeacherSource(Teacher.random(cfg), cfg.in_dim, cfg.noise, global_batch, seed,
                         eval_x.astype(np.float32), cfg.train_examples)
