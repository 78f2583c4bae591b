"""Score a language model on a text file or a prepared corpus's validation split.

    python -m scalelab.evaluate --workdir runs/lm --text heldout.txt
    python -m scalelab.evaluate --workdir runs/lm_bpe --data corpora/stdlib_bpe4096 [--eval-tokens 262144]

Prints `loss X` (mean next-token cross-entropy, nats per token) and
`bits_per_byte Y`. The text is tokenized by the workdir's tokenizer with no
token added, so the first token is context only; a long text is scored in
consecutive windows of the model's context (each token predicted once, from
the tokens before it in its window). Bits per byte count the UTF-8 bytes of
the scored tokens, so models with different tokenizers compare.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from scalelab.core import cli, tasks


@functools.partial(jax.jit, static_argnames='graphdef')
def window_sums(graphdef, params, batch: dict) -> dict:
    return tasks.eval_sums('lm', nnx.merge(graphdef, params)(batch['inputs']), batch)


def text_windows(tokens: np.ndarray, context: int) -> dict[str, np.ndarray]:
    """Consecutive windows: targets tokens[1:], each in one window, padding weighted 0."""
    n_windows = max(1, math.ceil((tokens.size - 1) / context))
    padded = np.zeros(n_windows * context + 1, np.int32)
    padded[:tokens.size] = tokens
    weights = np.zeros(n_windows * context, np.float32)
    weights[:tokens.size - 1] = 1.0
    return {'inputs': padded[:-1].reshape(n_windows, context), 'targets': padded[1:].reshape(n_windows, context),
            'weights': weights.reshape(n_windows, context)}


def score(lm, batches) -> tuple[float, float]:
    """(summed loss, scored tokens) over batches of windows."""
    sums = [jax.device_get(window_sums(lm.graphdef, lm.params, b)) for b in batches]
    return sum(float(s['loss_sum']) for s in sums), sum(float(s['count']) for s in sums)


def batched(windows: dict[str, np.ndarray], batch: int):
    """Rows in batches of `batch`, the last padded with weight-0 rows (one compiled shape)."""
    n = len(windows['inputs'])
    for start in range(0, n, batch):
        rows = {k: v[start:start + batch] for k, v in windows.items()}
        short = batch - len(rows['inputs'])
        yield {k: np.concatenate([v, np.zeros((short, *v.shape[1:]), v.dtype)]) for k, v in rows.items()}


def score_text(lm, text: str, batch: int) -> dict:
    tokens = np.asarray(lm.tokenizer.encode(text), np.int64)
    if tokens.size < 2:
        raise ValueError(f'the text is {tokens.size} token(s) long; scoring needs at least 2')
    windows = text_windows(tokens, lm.context)
    loss_sum, count = score(lm, batched(windows, batch))
    n_bytes = int(lm.tokenizer.token_bytes()[tokens[1:]].sum())
    return dict(loss=loss_sum / count, bits_per_byte=loss_sum / math.log(2) / n_bytes, tokens=int(count),
                bytes=n_bytes, windows=len(windows['inputs']))


def score_corpus(lm, directory: str, eval_tokens: int, batch: int) -> dict:
    from ml_collections import ConfigDict

    from scalelab.data import corpus
    meta = corpus.read_meta(directory, key='--data')
    if meta['tokenizer']['sha256'] != lm.tokenizer.sha256:
        raise ValueError(f'--data {directory}: prepared with {meta["tokenizer"]["kind"]} '
                         f'{meta["tokenizer"]["name"]!r}, not the workdir\'s tokenizer ({lm.tokenizer.kind} '
                         f'{lm.tokenizer.name!r}); prepare it with --tokenizer WORKDIR/tokenizer')
    cfg = ConfigDict(dict(corpus.default_config(), path=directory, seq_len=lm.context, eval_tokens=eval_tokens))
    source = corpus.load(cfg, batch, seed=0)
    loss_sum, count = score(lm, (source.eval_batch(i, slice(0, batch)) for i in range(source.eval_batches())))
    loss = loss_sum / count
    return dict(loss=loss, bits_per_byte=loss / math.log(2) / source.bytes_per_token, tokens=int(count),
                bytes=round(count * source.bytes_per_token), windows=source.eval_windows)


def read_text(path: Path, encoding: str) -> str:
    """The file's text, or one error naming the file and where decoding failed."""
    raw = path.read_bytes()
    nul = raw.find(b'\0')
    if nul >= 0:
        raise ValueError(f'--text {path}: a binary file (a NUL byte at byte {nul}), not text')
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f'--text {path}: not {encoding} text ({e.reason} at byte {e.start}); '
                         'pass --encoding (e.g. latin-1) if it is text in another encoding') from None
    except LookupError:
        raise ValueError(f'--encoding={encoding!r}: not a codec Python knows (e.g. utf-8, latin-1)') from None


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(prog='python -m scalelab.evaluate', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', required=True, help='a run (or an imported model) directory')
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument('--text', help='a UTF-8 text file to score')
    what.add_argument('--data', help="a prepared corpus: its validation split's start is scored")
    p.add_argument('--eval-tokens', type=int, default=2 ** 62, help='with --data: tokens scored at most')
    p.add_argument('--batch', type=int, default=8, help='windows per forward pass')
    p.add_argument('--encoding', default='utf-8', help='how --text is decoded (default utf-8)')
    args = p.parse_args(argv)
    if args.batch < 1 or args.eval_tokens < 1:
        p.error('--batch and --eval-tokens must be positive')
    from scalelab.use import inference
    from scalelab.core import runtime
    from scalelab.data import tokenizer as tokenizer_lib
    from scalelab.core.errors import ConfigError
    runtime.configure()
    try:
        if args.text is not None:  # read before the model loads: a bad file fails at once
            path = Path(args.text)
            if not path.is_file():
                raise ValueError(f'--text {args.text}: no such file')
            text = read_text(path, args.encoding)
        lm = inference.load(args.workdir)
        if args.text is not None:
            result = score_text(lm, text, args.batch)
        else:
            result = score_corpus(lm, args.data, args.eval_tokens, args.batch)
    except (ValueError, ConfigError, tokenizer_lib.TokenizerError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'loss {result["loss"]:.6f}')
    print(f'bits_per_byte {result["bits_per_byte"]:.6f}')
    print(f'({result["tokens"]:,} tokens, {result["bytes"]:,} bytes, {result["windows"]} windows of '
          f'{lm.context} tokens, {lm.tokenizer.kind} tokenizer {lm.tokenizer.name!r})')
    return 0
