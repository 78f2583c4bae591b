"""A prepared corpus (`python -m scalelab.data.prepare`): flat token shards read without loading them.

Layout of a corpus directory:

    meta.json              format, tokenizer identity (kind, name, sha256, vocabulary),
                           token dtype, document separator, and per split (train,
                           validation): documents, tokens, bytes, bytes per token, shards
    tokenizer/             the tokenizer itself (scalelab.tokenizer.save)
    train-00000.bin ...    little-endian uint16 (vocabulary <= 65536) or uint32 tokens,
    validation-00000.bin   documents one after another, each followed by the separator;
                           np.memmap(path, dtype) opens one

meta.json is written last, so a directory without it is unfinished; a shard
whose size disagrees with meta.json is refused.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from scalelab.core.errors import ConfigError
from scalelab.core.tasks import DataSpec
from scalelab.data import windows
from scalelab.core import workdir as workdir_lib
from scalelab.data import tokenizer as tokenizer_lib

META = 'meta.json'
FORMAT = 'scalelab-corpus-1'
SPLITS = ('train', 'validation')
PREPARE_HINT = 'prepare one with `python -m scalelab.data.prepare --input ... --tokenizer ... --out DIR`'


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        name='corpus',
        path='',             # a directory written by scalelab.data.prepare
        tokenizer='',        # '' = the corpus's own; else a tokenizer spec that must be the one it was prepared with
        seq_len=256,
        eval_tokens=262144,  # the evaluation set: this many tokens of the validation split's start
        train_examples=0,    # > 0: train on only this many fixed windows
    ))


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2 ** 16 else np.uint32)


def read_meta(directory: str | Path, key: str = 'data.path') -> dict:
    """The corpus's metadata, with one clear error for a missing, unfinished or corrupt corpus."""
    directory = Path(directory)
    path = directory / META
    if not path.is_file():
        what = 'no such directory' if not directory.is_dir() else f'no {META}, so not a finished corpus'
        raise ConfigError([f'{key}={str(directory)!r}: {what}; {PREPARE_HINT}'])
    meta = workdir_lib.read_json(path, 'prepare the corpus again')
    if meta.get('format') != FORMAT:
        raise ConfigError([f'{path}: format {meta.get("format")!r}, expected {FORMAT!r}; prepare the corpus again'])
    return meta


def shard_problems(directory: Path, meta: dict) -> list[str]:
    """Shards that are missing, or whose size is not what meta.json says (truncated, empty, replaced)."""
    item = np.dtype(meta['dtype']).itemsize
    problems = []
    for split in SPLITS:
        for shard in meta['splits'][split]['shards']:
            path = directory / shard['file']
            expected = shard['tokens'] * item
            if not path.is_file():
                problems.append(f'{path}: missing')
            elif path.stat().st_size != expected:
                problems.append(f'{path}: {path.stat().st_size} bytes, but {META} says {shard["tokens"]} tokens '
                                f'= {expected} bytes (truncated or replaced); prepare the corpus again')
    return problems


def spec(cfg) -> DataSpec:
    vocab = read_meta(cfg.path)['tokenizer']['vocab_size']
    return DataSpec('lm', (cfg.seq_len,), vocab, vocab_source=f'the tokenizer of data.path={cfg.path!r}')


def validate(cfg) -> list[str]:
    if not cfg.path:
        return [f"data.path='': name a prepared corpus directory; {PREPARE_HINT}"]
    try:
        meta = read_meta(cfg.path)
    except ConfigError as e:
        return e.problems
    problems = shard_problems(Path(cfg.path), meta)
    if cfg.tokenizer:
        try:
            wanted = tokenizer_lib.load(cfg.tokenizer)
        except tokenizer_lib.TokenizerError as e:
            problems.append(f'data.tokenizer={cfg.tokenizer!r}: {e}')
        else:
            have = meta['tokenizer']
            if wanted.sha256 != have['sha256']:
                problems.append(
                    f'data.tokenizer={cfg.tokenizer!r} ({wanted.kind} {wanted.name!r}, {wanted.vocab_size} ids, '
                    f'sha256 {wanted.sha256[:12]}) is not the tokenizer data.path={cfg.path!r} was prepared with '
                    f'({have["kind"]} {have["name"]!r}, {have["vocab_size"]} ids, sha256 {have["sha256"][:12]}); '
                    'prepare the corpus with this tokenizer, or leave data.tokenizer empty')
    if cfg.seq_len <= 0:
        problems.append(f'data.seq_len={cfg.seq_len}: must be positive')
    elif cfg.eval_tokens < cfg.seq_len:
        problems.append(f'data.eval_tokens={cfg.eval_tokens}: must be at least data.seq_len={cfg.seq_len}')
    if cfg.train_examples < 0:
        problems.append(f'data.train_examples={cfg.train_examples}: must be non-negative (0 = all)')
    return problems


@dataclasses.dataclass(frozen=True)
class CorpusSource(windows.LMWindows):
    """Windows of a prepared corpus's shards; bits per byte from the evaluation tokens' own bytes."""
    tokenizer: tokenizer_lib.Tokenizer = None
    meta: dict = None

    def describe(self) -> dict:
        train = self.meta['splits']['train']
        return dict(train_tokens=self.train.size, train_documents=train['documents'], train_bytes=train['bytes'],
                    eval_tokens=self.eval_windows * self.seq_len, eval_bytes_per_token=self.bytes_per_token,
                    tokenizer=self.meta['tokenizer'])


def stream(directory: Path, meta: dict, split: str) -> windows.ShardStream:
    shards = meta['splits'][split]['shards']
    return windows.ShardStream([directory / s['file'] for s in shards], [s['tokens'] for s in shards],
                               np.dtype(meta['dtype']))


def load(cfg, global_batch: int, seed: int) -> CorpusSource:
    directory = Path(cfg.path)
    meta = read_meta(directory)
    tok = tokenizer_lib.load(str(directory / 'tokenizer'))
    train, held_out = stream(directory, meta, 'train'), stream(directory, meta, 'validation')
    for split, s in (('train', train), ('validation', held_out)):
        if s.n_starts(cfg.seq_len + 1) <= 0:
            raise ConfigError([f'data.path={cfg.path!r}: the {split} split has no shard of more than '
                               f'data.seq_len = {cfg.seq_len} tokens ({s.size} tokens in all)'])
    source = CorpusSource(train, held_out, cfg.seq_len, global_batch, seed, cfg.eval_tokens, 1.0,
                          cfg.train_examples, tokenizer=tok, meta=meta)
    targets = source.eval_targets()
    if targets.max() >= tok.vocab_size:
        raise ConfigError([f'data.path={cfg.path!r}: the validation split holds token id {targets.max()}, '
                           f'beyond the {tok.vocab_size} ids of its tokenizer; prepare the corpus again'])
    bytes_per_token = float(tok.token_bytes()[targets].sum() / targets.size)
    return dataclasses.replace(source, bytes_per_token=bytes_per_token)
