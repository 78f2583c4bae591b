"""Data sources and the batching pipeline.

A source holds its data on the host and answers `train_batch(step, rows)` and
`eval_batch(index, rows)` with numpy arrays: a pure function of (seed, step)
restricted to this process's rows, so resuming needs only the step.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from scalelab.data import text

SOURCES = {'text': text}


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        name='text',
        path='',             # '' = the Python stdlib source; a directory, a file, or files joined by ','
        pattern='*.py',      # files taken from a directory (recursive glob)
        eval_fraction=0.05,  # share of files held out for evaluation
        seq_len=256,
    ))


def validate(cfg: ConfigDict) -> list[str]:
    if cfg.name not in SOURCES:
        return [f'data.name={cfg.name!r}: not one of {", ".join(map(repr, SOURCES))}']
    return SOURCES[cfg.name].validate(cfg)


def load(cfg: ConfigDict, global_batch: int, seed: int):
    return SOURCES[cfg.name].load(cfg, global_batch, seed)
