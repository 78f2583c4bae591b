"""Data sources and the batching pipeline.

A source module provides default_config(), spec(cfg) -> DataSpec (task, input
shape, outputs: known before loading), validate(cfg) -> problems, and
load(cfg, global_batch, seed) -> a source answering `train_batch(step, rows)`,
`eval_batches()`, `eval_batch(index, rows)` and `describe()`: numpy
arrays that are a pure function of (seed, step), restricted to this
process's rows, so resuming needs only the step. The evaluation set is fixed
per dataset (a budget of tokens or examples in the data section): every seed,
batch size, mesh and sweep point is scored on the same examples.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from scalelab.core.tasks import DataSpec
from scalelab.data import corpus, images, teacher, text, translation

SOURCES = {'text': text, 'corpus': corpus, 'images': images, 'teacher': teacher, 'translation': translation}


def source(name: str):
    if name not in SOURCES:
        raise KeyError(f'data.name={name!r}: not one of {", ".join(map(repr, SOURCES))}')
    return SOURCES[name]


def default_config(name: str = 'text') -> ConfigDict:
    return source(name).default_config()


def spec(cfg: ConfigDict) -> DataSpec:
    return source(cfg.name).spec(cfg)


def validate(cfg: ConfigDict) -> list[str]:
    return source(cfg.name).validate(cfg)


def load(cfg: ConfigDict, global_batch: int, seed: int):
    return source(cfg.name).load(cfg, global_batch, seed)
