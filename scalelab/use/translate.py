"""Translate with a trained encoder-decoder, and score translations the standard way.

    python -m scalelab.translate --workdir runs/translate --text "four hundred and two"
        [--text ...] [--file sources.txt] [--beam-size 4] [--length-penalty 0.6] [--no-cache]

Scores are sacreBLEU's corpus BLEU and chrF (their signatures say how: tokenizer,
smoothing, version) and exact-match accuracy, over detokenized text. During training
the evaluation set is decoded at every evaluation (data.eval_beam_size, greedy by
default) and eval_bleu, eval_chrf and eval_exact_match join the evaluation line.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from scalelab.core import cli, weights
from scalelab.models import decoding
from scalelab.training import translation_eval


@dataclasses.dataclass(frozen=True)
class Translator:
    """A trained encoder-decoder from a workdir: config, parameters, tokenizer."""
    model_cfg: ml_collections.FrozenConfigDict
    data_cfg: ml_collections.FrozenConfigDict
    graphdef: nnx.GraphDef
    params: dict
    tokenizer: object

    def encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        from scalelab.data import translation
        return translation.encode(self.tokenizer, texts, self.data_cfg.max_source_len, start=False)

    def translate(self, texts: list[str], beam_size: int = 4, alpha: float = 0.6,
                  cached: bool = True) -> tuple[list[str], int]:
        """(translations, how many sources were cut to data.max_source_len)."""
        source_BxS, cut = self.encode(texts)
        rows = decoding.translate_ids(self.graphdef, self.params, {}, source_BxS, max_len=self.data_cfg.max_target_len,
                                      beam_size=beam_size, alpha=alpha, cached=cached)
        return translation_eval.detokenize(self.tokenizer, np.asarray(rows)), cut


def load(workdir: str | Path) -> Translator:
    from scalelab import data, models
    from scalelab.training import plan
    from scalelab.use import inference
    workdir = Path(workdir)
    saved = inference.read_config(workdir)
    if saved.get('model', {}).get('name') != 'seq2seq':
        raise inference.WorkdirError(f"{workdir}: model.name={saved.get('model', {}).get('name')!r}; "
                                     "translation needs a 'seq2seq' run")
    model_cfg, data_cfg = plan.saved_model(saved), plan.saved_data(saved, 'translation')
    graphdef, params, _ = models.split_abstract(model_cfg, data.spec(data_cfg))
    try:
        arrays = weights.arrange(weights.load_params_flat(workdir), nnx.to_pure_dict(params))
    except (FileNotFoundError, ValueError) as e:
        raise inference.WorkdirError(f'{workdir}: {e}') from None
    return Translator(ml_collections.FrozenConfigDict(model_cfg), ml_collections.FrozenConfigDict(data_cfg),
                      graphdef, jax.device_put(arrays), inference.workdir_tokenizer(workdir, saved))


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(prog='python -m scalelab.translate', description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', required=True, help='a seq2seq run directory')
    p.add_argument('--text', action='append', default=[], help='a sentence to translate (repeatable)')
    p.add_argument('--file', help='a UTF-8 file of sentences, one per line')
    p.add_argument('--beam-size', type=int, default=4, help='1: greedy search')
    p.add_argument('--length-penalty', type=float, default=0.6, help="GNMT's alpha (0: none)")
    p.add_argument('--no-cache', action='store_true', help='recompute the decoder over every prefix (reference)')
    args = p.parse_args(argv)
    if args.beam_size < 1 or args.length_penalty < 0:
        p.error(f'--beam-size {args.beam_size} must be >= 1 and --length-penalty {args.length_penalty} >= 0')
    texts = list(args.text)
    if any(not t.strip() for t in texts):
        p.error('--text: an empty sentence; give words to translate')
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            p.error(f'--file {args.file}: no such file')
        raw = path.read_bytes()
        try:
            if b'\0' in raw:
                raise UnicodeDecodeError('utf-8', raw, raw.index(b'\0'), raw.index(b'\0') + 1, 'a NUL byte')
            lines = [line.strip() for line in raw.decode('utf-8').splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            p.error(f'--file {args.file}: not UTF-8 text ({e.reason} at byte {e.start}); give a file of sentences, '
                    'one per line')
        if not lines:
            p.error(f'--file {args.file}: holds no sentence (it is empty or blank); give one sentence per line')
        texts += lines
    if not texts:
        p.error('give --text or --file')
    from scalelab.use import inference
    from scalelab.core import runtime
    runtime.configure()
    try:
        translator = load(args.workdir)
    except inference.WorkdirError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    translations, cut = translator.translate(texts, args.beam_size, args.length_penalty, not args.no_cache)
    if cut:
        print(f'warning: {cut} source(s) longer than data.max_source_len={translator.data_cfg.max_source_len} '
              'tokens were cut', file=sys.stderr)
    for translation in translations:
        print(translation)
    return 0
