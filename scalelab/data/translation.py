"""Parallel (source, target) sentences for translation, with a joint BPE trained on them.

The default corpus needs no download: English number phrases and their French
(data.source_lang / data.target_lang: any two languages num2words speaks) for
numbers drawn from [numbers_low, numbers_high], each count of digits equally likely
(data.numbers_sampling='digits'; 'uniform' draws most from the largest). A tenth of
the numbers (by the CRC32 of their digits) are held out: the evaluation pairs are
drawn from them only, training pairs never. The model sees only words, never digits.

A user's corpus (data.path) is a .tsv (source TAB target per line) or a .jsonl
({"source": ..., "target": ...} per line; data.source_field / data.target_field):
lines with an empty side are skipped and counted, a line without both columns or
fields is an error naming it. Pairs are held out for evaluation by the CRC32 of their
source (text.held_out). Sources and targets longer than data.max_source_len /
max_target_len tokens (with the end token) are cut there, with a warning, and counted
in the run's summary (data.truncated_sources / truncated_targets).

Token ids: 0 padding, 1 the end of a sentence (<|endoftext|>, also the decoder's start).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import zlib
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from scalelab.core.errors import ConfigError
from scalelab.core.tasks import DataSpec
from scalelab.data import text
from scalelab.data import tokenizer as tokenizer_lib

PAD, EOS = '<pad>', tokenizer_lib.BPE_SPECIAL
PAD_ID, EOS_ID = 0, 1  # train_bpe gives the special tokens the first ids, in order
FORMATS = ('.tsv', '.jsonl')
SAMPLINGS = ('digits', 'uniform')
HELD_OUT_EVERY = 10  # one number in this many is an evaluation number


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        name='translation',
        path='',               # '' = number phrases from num2words; else a .tsv or .jsonl of (source, target)
        source_lang='en',      # num2words languages of the default corpus
        target_lang='fr',
        numbers_low=0,         # the default corpus's numbers: drawn from [low, high]
        numbers_high=999999,
        numbers_sampling='digits',  # digits: each count of digits equally likely | uniform
        train_pairs=30000,     # the default corpus's training pairs (numbers drawn with replacement)
        source_field='source',  # .jsonl keys
        target_field='target',
        eval_fraction=0.05,    # a user corpus's share held out for evaluation
        eval_examples=500,     # the evaluation set: this many held-out pairs (their loss, BLEU, chrF)
        vocab_size=512,        # the joint BPE's vocabulary at most (padding and end token included)
        max_source_len=24,     # tokens, the end token included: longer sources are cut (and counted)
        max_target_len=24,     # tokens, the decoder's start or end token included
        eval_beam_size=1,      # decoding for BLEU during training: 1 = greedy
        eval_length_penalty=0.6,  # GNMT's alpha, for beam search
    ))


def spec(cfg) -> DataSpec:
    return DataSpec('seq2seq', (cfg.max_source_len, cfg.max_target_len), cfg.vocab_size,
                    vocab_source=f'the joint BPE of data.vocab_size={cfg.vocab_size}')


def validate(cfg) -> list[str]:
    problems = []
    if cfg.path:
        path = Path(cfg.path)
        if path.suffix not in FORMATS:
            problems.append(f'data.path={cfg.path!r}: not one of {", ".join(FORMATS)} (source TAB target lines, '
                            'or JSON lines with data.source_field and data.target_field)')
        elif not path.is_file():
            problems.append(f'data.path={cfg.path!r}: no such file')
    else:
        problems += _language_problems(cfg)
        if not 0 <= cfg.numbers_low < cfg.numbers_high:
            problems.append(f'data.numbers_low={cfg.numbers_low}, data.numbers_high={cfg.numbers_high}: need '
                            '0 <= low < high')
        elif cfg.eval_examples > (cfg.numbers_high - cfg.numbers_low + 1) // (2 * HELD_OUT_EVERY):
            problems.append(f'data.eval_examples={cfg.eval_examples}: more than half the about '
                            f'{(cfg.numbers_high - cfg.numbers_low + 1) // HELD_OUT_EVERY} held-out numbers in '
                            f'[numbers_low, numbers_high] = [{cfg.numbers_low}, {cfg.numbers_high}]; widen the range')
        if cfg.numbers_sampling not in SAMPLINGS:
            problems.append(f'data.numbers_sampling={cfg.numbers_sampling!r}: not one of {", ".join(SAMPLINGS)}')
    for key in ('train_pairs', 'eval_examples', 'max_source_len', 'max_target_len', 'eval_beam_size'):
        if cfg[key] <= 0:
            problems.append(f'data.{key}={cfg[key]}: must be positive')
    if cfg.vocab_size < 258:
        problems.append(f'data.vocab_size={cfg.vocab_size}: a byte-level BPE with padding and an end token needs '
                        'at least 258')
    if not 0.0 < cfg.eval_fraction < 1.0:
        problems.append(f'data.eval_fraction={cfg.eval_fraction}: must be in (0, 1)')
    if cfg.eval_length_penalty < 0:
        problems.append(f'data.eval_length_penalty={cfg.eval_length_penalty}: must be non-negative')
    return problems


def _language_problems(cfg) -> list[str]:
    from num2words import CONVERTER_CLASSES
    return [f'data.{key}={cfg[key]!r}: num2words has no such language; valid: {", ".join(sorted(CONVERTER_CLASSES))}'
            for key in ('source_lang', 'target_lang') if cfg[key] not in CONVERTER_CLASSES]


def held_out_number(x: int) -> bool:
    """Whether a number is kept for evaluation: fixed by its digits, whatever the range or seed."""
    return zlib.crc32(str(x).encode()) % HELD_OUT_EVERY == 0


def draw_numbers(rng: np.random.Generator, low: int, high: int, sampling: str, n: int, held: bool) -> list[int]:
    """n numbers from [low, high] (with replacement), all held out or none."""
    if sampling == 'digits':  # [low, high] cut at the powers of ten, each part equally likely
        edges = sorted({low, high + 1, *(10 ** k for k in range(1, len(str(high)) + 1) if low < 10 ** k <= high)})
    else:
        edges = [low, high + 1]
    starts, stops = np.array(edges[:-1]), np.array(edges[1:])
    out = []
    while len(out) < n:
        part = rng.integers(len(starts), size=2 * n)
        drawn = rng.integers(starts[part], stops[part])
        out += [int(x) for x in drawn if held_out_number(int(x)) == held]
    return out[:n]


@functools.lru_cache(maxsize=4)
def number_pairs(source_lang: str, target_lang: str, low: int, high: int, sampling: str, n_train: int,
                 n_eval: int):
    """(train pairs, eval pairs) of number phrases: the evaluation numbers distinct and held
    out, fixed whatever the run's seed."""
    from num2words import num2words
    rng = np.random.default_rng(0)
    evaluation = []
    while len(evaluation) < n_eval:
        evaluation = list(dict.fromkeys(evaluation + draw_numbers(rng, low, high, sampling, n_eval, True)))
    train = draw_numbers(rng, low, high, sampling, n_train, False)
    phrases = {x: (num2words(x, lang=source_lang), num2words(x, lang=target_lang)) for x in {*train, *evaluation}}
    return [phrases[x] for x in train], [phrases[x] for x in evaluation[:n_eval]]


@dataclasses.dataclass
class Corpus:
    train: list[tuple[str, str]]
    eval: list[tuple[str, str]]
    skipped_empty: int = 0


def read_pairs(path: Path, source_field: str, target_field: str) -> tuple[list[tuple[str, str]], int]:
    """(pairs, lines skipped for an empty side); a malformed line is an error naming it."""
    pairs, skipped = [], 0
    with path.open(encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip('\n').rstrip('\r')
            if not line.strip():
                skipped += 1
                continue
            if path.suffix == '.tsv':
                columns = line.split('\t')
                if len(columns) < 2:
                    raise ConfigError([f'data.path={str(path)!r}, line {number}: expected 2 tab-separated '
                                       f'columns (source, target), found {len(columns)}: {line[:80]!r}'])
                source, target = columns[0], columns[1]
            else:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError([f'data.path={str(path)!r}, line {number}: not JSON ({e})']) from None
                missing = [k for k in (source_field, target_field) if not isinstance(record, dict) or k not in record]
                if missing:
                    raise ConfigError([f'data.path={str(path)!r}, line {number}: no field {missing[0]!r} (set '
                                       'data.source_field / data.target_field to the keys it has)'])
                source, target = str(record[source_field]), str(record[target_field])
            if not source.strip() or not target.strip():
                skipped += 1
                continue
            pairs.append((source.strip(), target.strip()))
    return pairs, skipped


def corpus(cfg) -> Corpus:
    if not cfg.path:
        train, held = number_pairs(cfg.source_lang, cfg.target_lang, cfg.numbers_low, cfg.numbers_high,
                                   cfg.numbers_sampling, cfg.train_pairs, cfg.eval_examples)
        return Corpus(train, held)
    pairs, skipped = read_pairs(Path(cfg.path), cfg.source_field, cfg.target_field)
    if len(pairs) < 2:
        raise ConfigError([f'data.path={cfg.path!r}: {len(pairs)} usable pair(s); a train/eval split needs 2'])
    held = text.held_out([s for s, _ in pairs], cfg.eval_fraction)
    train = [p for i, p in enumerate(pairs) if i not in held]
    evaluation = [p for i, p in enumerate(pairs) if i in held][:cfg.eval_examples]
    return Corpus(train, evaluation, skipped)


def train_tokenizer(pairs: list[tuple[str, str]], vocab_size: int) -> tokenizer_lib.Tokenizer:
    """One byte-level BPE for both sides (so they may share an embedding): id 0 padding, 1 the end."""
    tok = tokenizer_lib.train_bpe((side for pair in pairs for side in pair), vocab_size, special_tokens=(PAD, EOS))
    return dataclasses.replace(tok, name=f'translation-bpe-{vocab_size}')


def encode(tok, texts: list[str], length: int, start: bool) -> tuple[np.ndarray, int]:
    """(rows of ([end] if `start`) + tokens + [end], the tokens cut to length - 1 and the rows
    padded to length + start; how many were cut). A target row holds the decoder's input and,
    shifted by one, its labels."""
    out = np.full((len(texts), length + start), PAD_ID, np.int32)
    cut = 0
    for row, ids in enumerate(tok.encode_batch(texts)):
        if len(ids) > length - 1:
            cut += 1
            ids = ids[:length - 1]
        seq = [EOS_ID] * start + ids + [EOS_ID]
        out[row, :len(seq)] = seq
    return out, cut


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Encoded pairs: source (N, S); target (N, T + 1) = [end] + tokens + [end], padded."""
    source: np.ndarray
    target: np.ndarray

    @property
    def size(self) -> int:
        return len(self.source)

    def batch(self, index_B: np.ndarray) -> dict[str, np.ndarray]:
        target = self.target[index_B]
        return {'inputs': self.source[index_B], 'decoder_inputs': target[:, :-1], 'targets': target[:, 1:],
                'weights': (target[:, 1:] != PAD_ID).astype(np.float32)}


def encode_pairs(tok, pairs, max_source_len: int, max_target_len: int) -> tuple[Pairs, int, int]:
    source, cut_source = encode(tok, [s for s, _ in pairs], max_source_len, start=False)
    target, cut_target = encode(tok, [t for _, t in pairs], max_target_len, start=True)
    return Pairs(source, target), cut_source, cut_target


@dataclasses.dataclass(frozen=True)
class TranslationSource:
    """A data source (see scalelab.data): random training pairs per (seed, step), the fixed
    evaluation pairs in order, and their texts for BLEU."""
    train: Pairs
    eval: Pairs
    eval_texts: list[tuple[str, str]]
    global_batch: int
    seed: int
    tokenizer: tokenizer_lib.Tokenizer
    counts: dict
    bytes_per_token = None

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        index_B = np.random.default_rng((self.seed, 0, step)).integers(0, self.train.size, self.global_batch)
        return self.train.batch(index_B[rows])

    def eval_batches(self) -> int:
        return math.ceil(self.eval.size / self.global_batch)

    def eval_batch(self, index: int, rows: slice) -> dict[str, np.ndarray]:
        """Rows of the evaluation pairs in order; past the last one, padding with weight 0."""
        pair_B = index * self.global_batch + np.arange(self.global_batch)
        real_B = pair_B < self.eval.size
        batch = self.eval.batch(np.where(real_B, pair_B, 0)[rows])
        batch['weights'] = batch['weights'] * real_B[rows, None]
        return batch

    def describe(self) -> dict:
        return dict(self.counts, tokenizer=self.tokenizer.name, vocab_size=self.tokenizer.vocab_size)


def load(cfg, global_batch: int, seed: int) -> TranslationSource:
    parallel = corpus(cfg)
    where = f'data.path={cfg.path!r}' if cfg.path else f'num2words {cfg.source_lang}->{cfg.target_lang}'
    tok = train_tokenizer(parallel.train, cfg.vocab_size)
    ids = [tok.impl.token_to_id(t) for t in (PAD, EOS)]
    if ids != [PAD_ID, EOS_ID]:
        raise ConfigError([f'{where}: the trained tokenizer put {PAD}, {EOS} at ids {ids}, not {PAD_ID}, {EOS_ID}'])
    train, cut_train_source, cut_train_target = encode_pairs(tok, parallel.train, cfg.max_source_len,
                                                             cfg.max_target_len)
    held, cut_eval_source, cut_eval_target = encode_pairs(tok, parallel.eval, cfg.max_source_len,
                                                          cfg.max_target_len)
    counts = dict(train_pairs=train.size, eval_pairs=held.size, skipped_empty=parallel.skipped_empty,
                  truncated_sources=cut_train_source + cut_eval_source,
                  truncated_targets=cut_train_target + cut_eval_target, corpus=where)
    cut = {k: counts[k] for k in ('truncated_sources', 'truncated_targets') if counts[k]}
    if cut:
        print(f'warning: {where}: ' + ', '.join(f'{v} {k.split("_")[1]} cut' for k, v in cut.items())
              + f' to data.max_source_len={cfg.max_source_len} / data.max_target_len={cfg.max_target_len} '
              'tokens (counted in summary.json)', file=sys.stderr, flush=True)
    if parallel.skipped_empty:
        print(f'warning: {where}: {parallel.skipped_empty} line(s) with an empty side skipped', file=sys.stderr,
              flush=True)
    return TranslationSource(train, held, parallel.eval, global_batch, seed, tok, counts)
