"""Tokenizers: bytes (the default), HF `tokenizers` (a tokenizer.json, or a
byte-level BPE trained on local files) and tiktoken `.tiktoken` BPE files.

A tokenizer is named by a spec string:

    bytes                      one token per byte (256 ids, no separator token)
    DIR                        a directory with tokenizer.json (HF), or a scalelab
                               tokenizer directory (a workdir's or a corpus's tokenizer/),
                               or a run workdir or prepared corpus (its tokenizer/)
    FILE.json                  an HF tokenizer.json
    FILE.tiktoken              a tiktoken BPE file, with GPT-2's split pattern and
                               <|endoftext|> after the last rank (as gpt2.tiktoken needs)

Training a BPE (`train_bpe`) is for `scalelab.data.prepare --tokenizer bpe`.
A tokenizer's identity is (kind, sha256 of its definition): a corpus and a
run config naming different tokenizers are refused by hash, not by name.
`save(dir)` writes it where a workdir or a corpus keeps it, so generation,
evaluation and export need nothing else.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from scalelab.core import files

META_FILE = 'scalelab_tokenizer.json'
HF_FILE = 'tokenizer.json'
EOS_CANDIDATES = ('<|endoftext|>', '</s>', '<eos>', '<|eos|>')
BPE_SPECIAL = '<|endoftext|>'


class TokenizerError(ValueError):
    """A tokenizer that cannot be found, read or used as asked."""


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, the alphabet of every
    byte-level BPE (HF `tokenizers`' ByteLevel uses the same one)."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b if b in printable else next(extra)) for b in range(256)}


@dataclasses.dataclass
class Tokenizer:
    """Text <-> ids through one of the three backends; `impl` is the library's object."""
    kind: str                 # bytes | hf | tiktoken
    name: str                 # where it came from, for messages
    vocab_size: int
    eos_id: int | None        # the document separator, if the vocabulary has one
    sha256: str
    impl: object = None
    source_bytes: bytes = b''  # the .tiktoken file, kept to save it again

    def encode(self, text: str) -> list[int]:
        if self.kind == 'bytes':
            return list(text.encode('utf-8'))
        if self.kind == 'hf':
            return self.impl.encode(text, add_special_tokens=False).ids
        return self.impl.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.kind == 'hf':
            return [e.ids for e in self.impl.encode_batch(texts, add_special_tokens=False)]
        if self.kind == 'tiktoken':
            return self.impl.encode_ordinary_batch(texts, num_threads=1)
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if self.kind == 'bytes':
            return bytes(i for i in ids if i < 256).decode('utf-8', errors='replace')
        if self.kind == 'hf':
            return self.impl.decode(ids, skip_special_tokens=False)
        return self.impl.decode(ids)

    def identity(self) -> dict:
        return {'kind': self.kind, 'name': self.name, 'vocab_size': self.vocab_size, 'eos_id': self.eos_id,
                'sha256': self.sha256}

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) UTF-8 bytes each id stands for (0 for special tokens):
        bits per byte of any token span is then exact without decoding it."""
        if self.kind == 'bytes':
            return np.ones(256, np.int64)
        if self.kind == 'tiktoken':
            n_ranks = self.vocab_size - 1
            return np.array([len(self.impl.decode_single_token_bytes(i)) for i in range(n_ranks)] + [0])
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        special = {t.content for t in self.impl.get_added_tokens_decoder().values() if t.special}
        lengths = np.zeros(self.vocab_size, np.int64)
        for token, i in self.impl.get_vocab(with_added_tokens=True).items():
            if token in special:
                continue
            if all(c in byte_of for c in token):  # byte-level BPE: one character per byte
                lengths[i] = len(token)
            else:
                lengths[i] = len(self.impl.decode([i]).encode('utf-8'))
        return lengths

    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer's files and its identity into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = self.identity()
        if self.kind == 'hf':
            files.write_atomic(directory / HF_FILE, self.impl.to_str().encode())
            meta['file'] = HF_FILE
        elif self.kind == 'tiktoken':
            file = Path(self.name).name if self.name.endswith('.tiktoken') else 'vocab.tiktoken'
            files.write_atomic(directory / file, self.source_bytes)
            meta['file'] = file
        files.write_atomic(directory / META_FILE, (json.dumps(meta, indent=2) + '\n').encode())
        return directory

    def to_hf(self):
        """The same tokenizer as an HF `tokenizers.Tokenizer`, for export to transformers."""
        if self.kind == 'hf':
            return self.impl
        from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers
        to_char = bytes_to_unicode()
        as_text = lambda b: ''.join(to_char[x] for x in b)
        if self.kind == 'bytes':
            vocab, merges, split = {to_char[b]: b for b in range(256)}, [], None
        else:
            ranks = self.impl._mergeable_ranks
            vocab = {as_text(token): rank for token, rank in ranks.items()}
            merges = [(as_text(a), as_text(b)) for a, b in _merges_of(ranks)]
            split = self.impl._pat_str
        tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.pre_tokenizer = (byte_level if split is None else pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior='isolated'), byte_level]))
        tok.decoder = decoders.ByteLevel()
        if self.kind == 'tiktoken':
            tok.add_special_tokens([BPE_SPECIAL])
        return tok


def _merges_of(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The BPE merges that build each multi-byte token, in rank order: the two
    parts that byte-pair encoding of the token, with only lower ranks, ends in."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            pairs = [(ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)]
            best_rank, i = min(pairs)
            if best_rank >= rank:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def byte_level() -> Tokenizer:
    return Tokenizer('bytes', 'bytes', 256, None, _sha256(b'bytes'))


def from_hf(tok, name: str) -> Tokenizer:
    vocab = tok.get_vocab(with_added_tokens=True)
    eos = next((vocab[t] for t in EOS_CANDIDATES if t in vocab), None)
    return Tokenizer('hf', name, max(vocab.values()) + 1, eos, _sha256(tok.to_str().encode()), tok)


def from_tiktoken(path: Path) -> Tokenizer:
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str
    raw = path.read_bytes()
    try:
        ranks = {base64.b64decode(token): int(rank) for token, rank in
                 (line.split() for line in raw.decode().splitlines() if line)}
    except (ValueError, UnicodeDecodeError) as e:
        raise TokenizerError(f'{path}: not a .tiktoken file (lines of "base64-token rank"): {e}') from None
    if not ranks:
        raise TokenizerError(f'{path}: an empty .tiktoken file')
    eos = max(ranks.values()) + 1
    impl = tiktoken.Encoding(path.stem, pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={BPE_SPECIAL: eos})
    return Tokenizer('tiktoken', path.name, eos + 1, eos, _sha256(raw, r50k_pat_str.encode()), impl, raw)


def load(spec: str) -> Tokenizer:
    """The tokenizer a spec string names (see the module docstring)."""
    if spec == 'bytes':
        return byte_level()
    path = Path(spec)
    if path.is_dir():
        for candidate in (path / 'tokenizer', path):  # a workdir or corpus, or a tokenizer directory
            if (candidate / META_FILE).is_file():
                return _load_saved(candidate)
            if (candidate / HF_FILE).is_file():
                return _load_hf_file(candidate / HF_FILE)
        raise TokenizerError(f'{spec}: a directory without {HF_FILE} or {META_FILE}; valid tokenizers: '
                             "'bytes', a directory with tokenizer.json, a tokenizer.json or a .tiktoken file")
    if path.suffix == '.tiktoken' and path.is_file():
        return from_tiktoken(path)
    if path.suffix == '.json' and path.is_file():
        return _load_hf_file(path)
    raise TokenizerError(f'tokenizer {spec!r}: no such tokenizer; valid: \'bytes\', a directory with '
                         'tokenizer.json, a tokenizer.json file or a .tiktoken file')


def _load_hf_file(path: Path) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer
    try:
        return from_hf(HFTokenizer.from_file(str(path)), str(path))
    except Exception as e:  # the Rust side raises a plain Exception for a bad file
        raise TokenizerError(f'{path}: not a readable HF tokenizer.json ({e})') from None


def _load_saved(directory: Path) -> Tokenizer:
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except json.JSONDecodeError as e:
        raise TokenizerError(f'{directory / META_FILE}: corrupt ({e})') from None
    if meta['kind'] == 'bytes':
        return byte_level()
    loaded = (_load_hf_file(directory / meta['file']) if meta['kind'] == 'hf'
              else from_tiktoken(directory / meta['file']))
    loaded.name = meta.get('name', loaded.name)
    return loaded


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: tuple[str, ...] = (BPE_SPECIAL,)) -> Tokenizer:
    """A byte-level BPE (GPT-2's scheme) trained with HF `tokenizers` on `texts`, with
    <|endoftext|> as its document separator; `special_tokens` take the first ids in order."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    if vocab_size < 256 + len(special_tokens):
        raise TokenizerError(f'--vocab-size={vocab_size}: a byte-level BPE needs at least {256 + len(special_tokens)} '
                             f'(256 bytes and {", ".join(special_tokens)})')
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return from_hf(tok, f'bpe-{tok.get_vocab_size()}')  # named by the ids it has: a small text yields fewer
