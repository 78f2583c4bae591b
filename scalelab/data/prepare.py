"""Tokenize local text once into flat token shards that any run of any size then reads.

    python -m scalelab.data.prepare --input DIR --pattern '*.py' --tokenizer bpe --vocab-size 4096 --out corpora/py
    python -m scalelab.data.prepare --input 'docs/*.jsonl' --text-field text --tokenizer gpt2.tiktoken --out corpora/docs
    python -m scalelab.data.prepare --input data.parquet --tokenizer runs/gpt2/tokenizer --out corpora/x --num-proc 2

Inputs: text files (one document each), JSON lines or Parquet (one document per
record, from --text-field), all loaded through HF `datasets` and tokenized with
--num-proc processes. Tokenizer: `bytes`, `bpe` (a byte-level BPE trained here on
the training split, --vocab-size ids) or any spec of scalelab.tokenizer.

The split: text files are held out by file name exactly as data.name='text'
splits them, so a BPE corpus and the byte-level run hold out the same text;
records by the CRC32 of their text. Each document is followed by the
tokenizer's separator (<|endoftext|>; none for bytes). The layout is in
scalelab/data/corpus.py. Re-running on unchanged input with the same options
does nothing; a killed run leaves only *.tmp files and no meta.json, which
training refuses and the next run removes.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from scalelab import cli
from scalelab import files as files_lib
from scalelab import progress
from scalelab import tokenizer as tokenizer_lib
from scalelab.data import corpus, text

RECORD_FORMATS = {'.jsonl': 'json', '.json': 'json', '.parquet': 'parquet'}


class PrepareError(ValueError):
    """Bad input to prepare: one line for the user."""


def input_files(inputs: list[str], pattern: str) -> list[Path]:
    """Files named by each --input: a file, a directory (searched for --pattern,
    recursively) or a glob pattern (`**` recurses)."""
    files: list[Path] = []
    for spec in inputs:
        path = Path(spec)
        found = (text.list_files(spec, pattern) if path.is_dir() else [path] if path.is_file() else
                 sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()))
        if not found:
            where = f'{spec!r} (a directory searched for --pattern={pattern!r})' if path.is_dir() else repr(spec)
            raise PrepareError(f'--input {where}: matches no file')
        files += found
    return files


def input_format(files: list[Path]) -> str:
    formats = {RECORD_FORMATS.get(p.suffix, 'text') for p in files}
    if len(formats) > 1:
        raise PrepareError(f'--input: mixes formats ({", ".join(sorted(formats))}); prepare them separately')
    return formats.pop()


def fingerprint(files: list[Path], options: dict) -> str:
    """What the output depends on: every input's path, size and modification time, and the options."""
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps([corpus.FORMAT, stats, options], sort_keys=True).encode()).hexdigest()


def documents(files: list[Path], fmt: str, text_field: str, eval_fraction: float, cache_dir: Path):
    """{'train': Dataset, 'validation': Dataset} in input order: a 'path' column for
    text files (read when tokenized, so no corpus is ever held in memory), a 'text'
    column for records."""
    import datasets
    if fmt == 'text':
        if len(files) < 2:
            raise PrepareError(f'--input: {len(files)} text file; a train/validation split by file needs 2 or more')
        train_files, eval_files = text.split_files(files, eval_fraction)
        return {split: datasets.Dataset.from_dict({'path': [str(p) for p in fs]})
                for split, fs in (('train', train_files), ('validation', eval_files))}
    try:
        ds = datasets.load_dataset(fmt, data_files=[str(p) for p in files], split='train', cache_dir=str(cache_dir))
    except Exception as e:  # datasets wraps the parser's error in its own
        raise PrepareError(f'--input: could not read {fmt} records from {files[0]}...: {e}') from None
    if text_field not in ds.column_names:
        raise PrepareError(f'--text-field={text_field!r}: no such field in {files[0]}; its fields: '
                           f'{", ".join(ds.column_names)}')
    ds = ds.select_columns([text_field]).rename_column(text_field, 'text') if text_field != 'text' else \
        ds.select_columns(['text'])
    cut = eval_fraction * 2 ** 32
    held = lambda batch: [zlib.crc32((t or '').encode()) < cut for t in batch['text']]
    return {'train': ds.filter(lambda b: [not h for h in held(b)], batched=True),
            'validation': ds.filter(held, batched=True)}


def batch_texts(batch: dict) -> list[str]:
    """The documents of a batch of `documents()` rows (undecodable bytes become U+FFFD)."""
    if 'path' in batch:
        return [Path(p).read_text(encoding='utf-8', errors='replace') for p in batch['path']]
    return [t or '' for t in batch['text']]


def all_texts(ds):
    for batch in ds.iter(batch_size=64):
        yield from batch_texts(batch)


def tokenize(ds, tok: tokenizer_lib.Tokenizer, num_proc: int, cache_file: Path, split: str, fingerprint: str):
    """The non-empty documents as token ids and their UTF-8 byte counts. `fingerprint`
    names the result for `datasets`, which would otherwise hash the tokenizer (seconds)."""
    def encode(batch):
        texts = [t for t in batch_texts(batch) if t]
        return {'ids': tok.encode_batch(texts), 'n_bytes': [len(t.encode('utf-8')) for t in texts]}
    return ds.map(encode, batched=True, batch_size=64, num_proc=min(num_proc, len(ds)) if num_proc > 1 else None,
                  remove_columns=ds.column_names, cache_file_name=str(cache_file), desc=f'tokenize {split}',
                  new_fingerprint=f'{fingerprint}-{split}')


class ShardWriter:
    """Appends documents' tokens to shards of at most `shard_tokens`; a shard is
    written as NAME.tmp and renamed only when whole."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.directory, self.split, self.dtype, self.shard_tokens = directory, split, dtype, shard_tokens
        self.shards: list[dict] = []
        self.file, self.tokens = None, 0

    def add(self, tokens: np.ndarray) -> None:
        while tokens.size:
            if self.file is None:
                name = f'{self.split}-{len(self.shards):05d}.bin'
                self.file, self.tokens = open(self.directory / (name + '.tmp'), 'wb'), 0
                self.shards.append({'file': name, 'tokens': 0})
            take = tokens[:self.shard_tokens - self.tokens]
            self.file.write(take.astype(self.dtype).tobytes())
            self.tokens += take.size
            self.shards[-1]['tokens'] = self.tokens
            tokens = tokens[take.size:]
            if self.tokens == self.shard_tokens:
                self._finish()

    def _finish(self) -> None:
        self.file.close()
        name = self.shards[-1]['file']
        os.replace(self.directory / (name + '.tmp'), self.directory / name)
        self.file = None

    def close(self) -> list[dict]:
        if self.file is not None:
            self._finish()
        return self.shards


def write_split(ds, writer: ShardWriter, separator: int | None) -> dict:
    n_docs = n_tokens = n_bytes = 0
    bar = progress.bar(total=len(ds), desc=f'write {writer.split}', unit='doc')
    for batch in ds.iter(batch_size=1024):
        bar.update(len(batch['ids']))
        for ids in batch['ids']:
            doc = np.asarray(ids, np.int64)
            writer.add(doc if separator is None else np.append(doc, separator))
            n_tokens += doc.size + (separator is not None)
        n_docs += len(batch['ids'])
        n_bytes += int(sum(batch['n_bytes']))
    bar.close()
    return {'documents': n_docs, 'tokens': n_tokens, 'bytes': n_bytes,
            'bytes_per_token': n_bytes / n_tokens if n_tokens else None, 'shards': writer.close()}


def prepare(inputs: list[str], tokenizer: str, out: str | Path, *, pattern: str = '*', vocab_size: int = 0,
            eval_fraction: float = 0.05, text_field: str = 'text', num_proc: int = 1,
            shard_tokens: int = 2 ** 28, overwrite: bool = False, log=print) -> dict:
    """Prepare (or find already prepared) the corpus in `out`; returns its metadata."""
    if not 0.0 < eval_fraction < 1.0:
        raise PrepareError(f'--eval-fraction={eval_fraction}: must be in (0, 1)')
    if num_proc < 1 or shard_tokens < 1:
        raise PrepareError(f'--num-proc={num_proc}, --shard-tokens={shard_tokens}: must be positive')
    if tokenizer == 'bpe' and not vocab_size:
        raise PrepareError('--tokenizer bpe: give the vocabulary size with --vocab-size N')
    files = input_files(inputs, pattern)
    fmt = input_format(files)
    tok = None if tokenizer == 'bpe' else tokenizer_lib.load(tokenizer)
    options = dict(tokenizer=f'bpe-{vocab_size}' if tok is None else tok.sha256, eval_fraction=eval_fraction,
                   text_field=text_field if fmt != 'text' else None, shard_tokens=shard_tokens)
    fp = fingerprint(files, options)
    out = Path(out)
    if (out / corpus.META).exists():
        try:
            old = corpus.read_meta(out, key='--out')
        except Exception:  # unreadable: an unfinished or damaged corpus is replaced only on request
            old = {'fingerprint': None}
        if old.get('fingerprint') == fp and not corpus.shard_problems(out, old):
            log(f'{out}: already prepared from these {len(files)} files with these options; nothing to do')
            return old
        if not overwrite:
            raise PrepareError(f'--out {str(out)!r}: holds a corpus prepared from other input or options '
                               '(or a damaged one); pass --overwrite to replace it, or choose another --out')
        (out / corpus.META).unlink()  # first, so no half-replaced corpus is ever accepted
        for split in old.get('splits', {}).values():
            for shard in split['shards']:
                (out / shard['file']).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob('*.tmp'):  # a killed run's unfinished shards
        stale.unlink()
    cache = out / '.cache'
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    import datasets  # its map shows tqdm bars: the same rule as ours (a terminal, not CI)
    datasets.enable_progress_bars() if progress.bars_enabled() else datasets.disable_progress_bars()
    if num_proc > 1:
        os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')  # the worker processes are the parallelism
    try:
        docs = documents(files, fmt, text_field, eval_fraction, cache)
        if tok is None:
            log(f'training a byte-level BPE of {vocab_size} ids on {len(docs["train"]):,} training documents')
            tok = tokenizer_lib.train_bpe(all_texts(docs['train']), vocab_size)
        dtype = corpus.token_dtype(tok.vocab_size)
        splits = {}
        for split in corpus.SPLITS:
            ids = tokenize(docs[split], tok, num_proc, cache / f'{split}.arrow', split, fp[:16])
            splits[split] = write_split(ids, ShardWriter(out, split, dtype, shard_tokens), tok.eos_id)
            splits[split]['empty_documents_skipped'] = len(docs[split]) - splits[split]['documents']
            if not splits[split]['tokens']:
                raise PrepareError(f'--input: the {split} split is empty (no non-empty document)')
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    tok.save(out / 'tokenizer')
    n_bytes = sum(s['bytes'] for s in splits.values())
    meta = dict(format=corpus.FORMAT, fingerprint=fp, tokenizer=tok.identity(), dtype=dtype.name,
                separator=tok.eos_id, input=dict(files=len(files), format=fmt, first=str(files[0]),
                                                  pattern=pattern, text_field=options['text_field']),
                eval_fraction=eval_fraction, splits=splits, seconds=time.perf_counter() - start)
    files_lib.write_json(out / corpus.META, meta)  # last: the corpus exists from here on
    log(f'{out}: {len(files)} files, {n_bytes / 1e6:.1f} MB -> ' + ', '.join(
        f'{k} {v["tokens"]:,} tokens ({v["documents"]:,} documents, {v["bytes_per_token"]:.2f} bytes/token)'
        for k, v in splits.items()) + f' with {tok.kind} {tok.name!r} ({tok.vocab_size} ids, {dtype.name}) in '
        f'{meta["seconds"]:.1f}s')
    return meta


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(prog='python -m scalelab.data.prepare', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', action='append', required=True,
                   help='a file, a directory (with --pattern) or a glob; repeat for more')
    p.add_argument('--pattern', default='*', help="files taken from an --input directory (default '*')")
    p.add_argument('--tokenizer', required=True,
                   help="bytes | bpe (with --vocab-size) | a tokenizer.json, its directory, or a .tiktoken file")
    p.add_argument('--vocab-size', type=int, default=0, help='ids of the BPE trained by --tokenizer bpe')
    p.add_argument('--out', required=True, help='the corpus directory to write')
    p.add_argument('--eval-fraction', type=float, default=0.05, help='share held out for validation')
    p.add_argument('--text-field', default='text', help='the field holding the text in JSON lines or Parquet')
    p.add_argument('--num-proc', type=int, default=1, help='tokenizing processes')
    p.add_argument('--shard-tokens', type=int, default=2 ** 28, help='tokens per shard file at most')
    p.add_argument('--overwrite', action='store_true', help='replace a corpus prepared with other input')
    args = p.parse_args(argv)
    try:
        prepare(args.input, args.tokenizer, args.out, pattern=args.pattern, vocab_size=args.vocab_size,
                eval_fraction=args.eval_fraction, text_field=args.text_field, num_proc=args.num_proc,
                shard_tokens=args.shard_tokens, overwrite=args.overwrite)
    except (PrepareError, tokenizer_lib.TokenizerError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
