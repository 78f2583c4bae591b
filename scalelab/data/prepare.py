"""Tokenize local text once into flat token shards that any run of any size then reads.

    python -m scalelab.data.prepare --input DIR --pattern '*.py' --tokenizer bpe --vocab-size 4096 --out corpora/py
    python -m scalelab.data.prepare --input 'docs/*.jsonl' --text-field text --tokenizer gpt2.tiktoken --out corpora/docs
    python -m scalelab.data.prepare --input data.parquet --tokenizer runs/gpt2/tokenizer --out corpora/x --num-proc 2

Inputs: text files (one document each), JSON lines or Parquet (one document per
record, from --text-field), all loaded through HF `datasets` and tokenized with
--num-proc processes. Tokenizer: `bytes`, `bpe` (a byte-level BPE trained here on
the training split, --vocab-size ids) or any spec of scalelab.tokenizer.

Nothing changes without a word: text files are decoded with --encoding (UTF-8), and
bytes it cannot decode become U+FFFD, counted and reported per file; the `bytes`
tokenizer takes each file's raw bytes exactly, undecoded. Files holding NUL bytes are
not text: they are skipped, counted and named. Directories named in --skip-dirs
(site-packages, dist-packages, __pycache__) are left out of a directory search, and
what they held is reported.

The split: text files are held out by file name exactly as data.name='text'
splits them, so a BPE corpus and the byte-level run hold out the same text;
records by the CRC32 of their text. Each document is followed by the
tokenizer's separator (<|endoftext|>; none for bytes). The layout is in
scalelab/data/corpus.py. Re-running on unchanged input with the same options
does nothing. A new corpus is built in a temporary directory beside --out and takes
its place only when complete, so a bad input or a kill leaves the old corpus (or
nothing) as it was; --overwrite is needed to replace a corpus made from other input.
"""
from __future__ import annotations

import argparse
import codecs
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

from scalelab.core import cli, progress
from scalelab.data import corpus, text
from scalelab.core import files as files_lib
from scalelab.data import tokenizer as tokenizer_lib

RECORD_FORMATS = {'.jsonl': 'json', '.json': 'json', '.parquet': 'parquet'}


class PrepareError(ValueError):
    """Bad input to prepare: one line for the user."""


def input_files(inputs: list[str], pattern: str, skip_dirs=text.SKIP_DIRS, log=print) -> list[Path]:
    """Files named by each --input: a file, a directory (searched for --pattern,
    recursively, leaving out `skip_dirs`, which is reported) or a glob pattern (`**` recurses)."""
    files: list[Path] = []
    for spec in inputs:
        path = Path(spec)
        skipped: dict[str, int] = {}
        if path.is_dir():
            found, skipped = text.search(path, pattern, tuple(skip_dirs))
        else:
            found = [path] if path.is_file() else sorted(Path(p) for p in glob.glob(spec, recursive=True)
                                                          if Path(p).is_file())
        for name, count in skipped.items():
            log(f'skipped {count:,} file{"s" if count != 1 else ""} under {name}/ in {spec} (--skip-dirs; '
                f'--skip-dirs= keeps them)')
        if not found:
            where = f'{spec!r} (a directory searched for --pattern={pattern!r})' if path.is_dir() else repr(spec)
            held = (f'; {sum(skipped.values()):,} matching files lie under {", ".join(skipped)}, which --skip-dirs '
                    'leaves out') if skipped else ''
            raise PrepareError(f'--input {where}: matches no file{held}')
        files += found
    return files


def text_files_only(files: list[Path], log=print) -> list[Path]:
    """`files` without those holding a NUL byte (binary, not text), which are named."""
    binary = {p for p in files if b'\0' in p.read_bytes()}
    if binary:
        names = sorted(str(p) for p in binary)
        log(f'warning: skipped {len(binary)} binary file{"s" if len(binary) != 1 else ""} (NUL bytes, not text): '
            + ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else ''))
    kept = [p for p in files if p not in binary]
    if not kept:
        raise PrepareError('--input: every file is binary (holds NUL bytes); prepare reads text')
    return kept


def read_document(path: str, encoding: str) -> tuple[str, int]:
    """A text file's content, and how many characters became U+FFFD because `encoding`
    could not decode their bytes (U+FFFD already in the file is not counted)."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode(encoding), 0
    except UnicodeDecodeError:
        decoded = raw.decode(encoding, errors='replace')
        return decoded, decoded.count('\ufffd') - raw.decode(encoding, errors='ignore').count('\ufffd')


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


def batch_texts(batch: dict, encoding: str = 'utf-8') -> list[str]:
    """The documents of a batch of `documents()` rows, decoded (see read_document)."""
    if 'path' in batch:
        return [read_document(p, encoding)[0] for p in batch['path']]
    return [t or '' for t in batch['text']]


def all_texts(ds, encoding: str = 'utf-8'):
    for batch in ds.iter(batch_size=64):
        yield from batch_texts(batch, encoding)


def tokenize(ds, tok: tokenizer_lib.Tokenizer, num_proc: int, cache_file: Path, split: str, fingerprint: str,
             encoding: str = 'utf-8'):
    """The non-empty documents as token ids, their byte counts, the characters their decoding
    replaced, and their file ('' for records). The `bytes` tokenizer reads a file's raw bytes,
    undecoded. `fingerprint` names the result for `datasets`, which would otherwise hash the
    tokenizer (seconds)."""
    def encode(batch):
        if 'path' in batch and tok.kind == 'bytes':
            docs = [(Path(p).read_bytes(), 0, p) for p in batch['path']]
        elif 'path' in batch:
            docs = [(*read_document(p, encoding), p) for p in batch['path']]
        else:
            docs = [(t or '', 0, '') for t in batch['text']]
        docs = [d for d in docs if d[0]]
        contents = [d[0] for d in docs]
        ids = ([list(c) for c in contents] if contents and isinstance(contents[0], bytes)
               else tok.encode_batch(contents))
        return {'ids': ids, 'n_bytes': [len(c) if isinstance(c, bytes) else len(c.encode('utf-8')) for c in contents],
                'replaced': [d[1] for d in docs], 'source': [d[2] for d in docs]}
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
    replaced: dict[str, int] = {}
    bar = progress.bar(total=len(ds), desc=f'write {writer.split}', unit='doc')
    for batch in ds.iter(batch_size=1024):
        bar.update(len(batch['ids']))
        for ids in batch['ids']:
            doc = np.asarray(ids, np.int64)
            writer.add(doc if separator is None else np.append(doc, separator))
            n_tokens += doc.size + (separator is not None)
        n_docs += len(batch['ids'])
        n_bytes += int(sum(batch['n_bytes']))
        replaced.update({source: n for source, n in zip(batch['source'], batch['replaced']) if n})
    bar.close()
    return {'documents': n_docs, 'tokens': n_tokens, 'bytes': n_bytes,
            'bytes_per_token': n_bytes / n_tokens if n_tokens else None, 'shards': writer.close(),
            'replaced_characters': replaced}


def prepare(inputs: list[str], tokenizer: str, out: str | Path, *, pattern: str = '*', vocab_size: int = 0,
            eval_fraction: float = 0.05, text_field: str = 'text', num_proc: int = 1,
            shard_tokens: int = 2 ** 28, overwrite: bool = False, encoding: str = 'utf-8',
            skip_dirs=text.SKIP_DIRS, log=print) -> dict:
    """Prepare (or find already prepared) the corpus in `out`; returns its metadata."""
    out = Path(out)
    check_options(out, tokenizer, vocab_size, eval_fraction, num_proc, shard_tokens, encoding)
    files = input_files(inputs, pattern, skip_dirs, log)
    fmt = input_format(files)
    if fmt == 'text':
        files = text_files_only(files, log)
    tok = None if tokenizer == 'bpe' else tokenizer_lib.load(tokenizer)
    options = dict(tokenizer=f'bpe-{vocab_size}' if tok is None else tok.sha256, eval_fraction=eval_fraction,
                   text_field=text_field if fmt != 'text' else None, shard_tokens=shard_tokens,
                   encoding=encoding if fmt == 'text' else None)
    fp = fingerprint(files, options)
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
    elif out.is_dir() and any(out.iterdir()):
        raise PrepareError(f'--out {str(out)!r}: a non-empty directory that holds no corpus; prepare writes a whole '
                           'directory: choose a new or empty --out')
    start = time.perf_counter()
    import datasets  # its map shows tqdm bars: the same rule as ours (a terminal, not CI)
    datasets.enable_progress_bars() if progress.bars_enabled() else datasets.disable_progress_bars()
    if num_proc > 1:
        os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')  # the worker processes are the parallelism
    with files_lib.staged_dir(out) as staged:  # the old corpus stays until the new one is whole
        cache = staged / '.cache'
        try:
            docs = documents(files, fmt, text_field, eval_fraction, cache)
            if tok is None:
                log(f'training a byte-level BPE of {vocab_size} ids on {len(docs["train"]):,} training documents')
                tok = tokenizer_lib.train_bpe(all_texts(docs['train'], encoding), vocab_size)
                if tok.vocab_size < vocab_size:
                    log(f'warning: --vocab-size={vocab_size}, but the training text supports only '
                        f'{tok.vocab_size:,} ids; the tokenizer is named {tok.name!r}')
            dtype = corpus.token_dtype(tok.vocab_size)
            splits = {}
            for split in corpus.SPLITS:
                ids = tokenize(docs[split], tok, num_proc, cache / f'{split}.arrow', split, fp[:16], encoding)
                splits[split] = write_split(ids, ShardWriter(staged, split, dtype, shard_tokens), tok.eos_id)
                splits[split]['empty_documents_skipped'] = len(docs[split]) - splits[split]['documents']
                if not splits[split]['tokens']:
                    raise PrepareError(f'--input: the {split} split is empty (no non-empty document)')
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        replaced = {k: v for split in splits.values() for k, v in split['replaced_characters'].items()}
        if replaced:
            worst = sorted(replaced.items(), key=lambda kv: -kv[1])
            log(f'warning: {sum(replaced.values()):,} characters in {len(replaced)} file'
                f'{"s" if len(replaced) != 1 else ""} could not be decoded as {encoding} and became U+FFFD: '
                + ', '.join(f'{path} ({n:,})' for path, n in worst[:5]) + (' ...' if len(worst) > 5 else '')
                + '; --encoding names another')
        tok.save(staged / 'tokenizer')
        n_bytes = sum(s['bytes'] for s in splits.values())
        meta = dict(format=corpus.FORMAT, fingerprint=fp, tokenizer=tok.identity(), dtype=dtype.name,
                    separator=tok.eos_id, input=dict(files=len(files), format=fmt, first=str(files[0]),
                                                      pattern=pattern, text_field=options['text_field'],
                                                      encoding=options['encoding']),
                    eval_fraction=eval_fraction, splits=splits, seconds=time.perf_counter() - start)
        files_lib.write_json(staged / corpus.META, meta)
    log(f'{out}: {len(files)} files, {n_bytes / 1e6:.1f} MB -> ' + ', '.join(
        f'{k} {v["tokens"]:,} tokens ({v["documents"]:,} documents, {v["bytes_per_token"]:.2f} bytes/token)'
        for k, v in splits.items()) + f' with {tok.kind} {tok.name!r} ({tok.vocab_size} ids, {dtype.name}) in '
        f'{meta["seconds"]:.1f}s')
    return meta


def check_options(out: Path, tokenizer: str, vocab_size: int, eval_fraction: float, num_proc: int,
                  shard_tokens: int, encoding: str) -> None:
    """Every option prepare can check before it reads or writes anything."""
    from scalelab.core import workdir as workdir_lib
    from scalelab.core.errors import UsageError
    try:
        workdir_lib.check_output(out, '--out', True, directory=True)
    except UsageError as e:
        raise PrepareError(str(e)) from None
    if not 0.0 < eval_fraction < 1.0:
        raise PrepareError(f'--eval-fraction={eval_fraction}: must be in (0, 1)')
    if num_proc < 1 or shard_tokens < 1:
        raise PrepareError(f'--num-proc={num_proc}, --shard-tokens={shard_tokens}: must be positive')
    if tokenizer == 'bpe' and not vocab_size:
        raise PrepareError('--tokenizer bpe: give the vocabulary size with --vocab-size N')
    if tokenizer == 'bpe' and vocab_size < 257:
        raise PrepareError(f'--vocab-size={vocab_size}: a byte-level BPE needs at least 257 ids '
                           '(256 bytes and <|endoftext|>)')
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise PrepareError(f'--encoding={encoding!r}: not a codec Python knows (e.g. utf-8, latin-1, cp1252)') \
            from None


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
    p.add_argument('--overwrite', action='store_true', help='replace a corpus prepared with other input '
                   '(only once the new one is complete)')
    p.add_argument('--encoding', default='utf-8', help='how text files are decoded (default utf-8; bytes it cannot '
                   'decode become U+FFFD and are reported); the bytes tokenizer reads raw bytes')
    p.add_argument('--skip-dirs', default=','.join(text.SKIP_DIRS),
                   help='directory names a directory search leaves out, comma-separated (default: '
                        f'{",".join(text.SKIP_DIRS)}; empty keeps everything)')
    args = p.parse_args(argv)
    try:
        prepare(args.input, args.tokenizer, args.out, pattern=args.pattern, vocab_size=args.vocab_size,
                eval_fraction=args.eval_fraction, text_field=args.text_field, num_proc=args.num_proc,
                shard_tokens=args.shard_tokens, overwrite=args.overwrite, encoding=args.encoding,
                skip_dirs=tuple(d for d in args.skip_dirs.split(',') if d))
    except (PrepareError, tokenizer_lib.TokenizerError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
