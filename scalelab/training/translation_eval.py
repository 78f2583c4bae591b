"""A translation run's evaluation: its evaluation sources decoded (greedy or beam search)
and scored the standard way, sacreBLEU's corpus BLEU and chrF (their signatures say how:
tokenizer, smoothing, version) and exact match, over detokenized text. The loop calls it at
every evaluation; `scalelab.translate` shares its scores and detokenizer."""
from __future__ import annotations

import numpy as np

from scalelab.models import decoding


def _metrics():
    import sacrebleu
    return sacrebleu.BLEU(), sacrebleu.CHRF()


def signatures() -> dict[str, str]:
    """sacreBLEU's signatures of the scores below: what a reader needs to compare BLEU."""
    bleu, chrf = _metrics()
    for metric in (bleu, chrf):  # a signature names the reference count, known once a corpus is scored
        metric.corpus_score(['x'], [['x']])
    return {'bleu_signature': str(bleu.get_signature()), 'chrf_signature': str(chrf.get_signature())}


def scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """eval_bleu, eval_chrf, eval_exact_match: corpus scores, one reference each (how: signatures())."""
    bleu, chrf = _metrics()
    return {'eval_bleu': bleu.corpus_score(hypotheses, [references]).score,
            'eval_chrf': chrf.corpus_score(hypotheses, [references]).score,
            'eval_exact_match': float(np.mean([h == r for h, r in zip(hypotheses, references)]))}


def detokenize(tokenizer, rows) -> list[str]:
    return [tokenizer.decode(decoding.strip(row)).strip() for row in rows]


def decode_rows(graphdef, params, model_state, source_BxS, *, max_len: int, beam_size: int, alpha: float,
                cached: bool = True) -> np.ndarray:
    """Token ids for every row of a (possibly sharded, multi-process) source batch, on every process."""
    from jax.experimental import multihost_utils
    ids = decoding.translate_ids(graphdef, params, model_state, source_BxS, max_len=max_len, beam_size=beam_size,
                                 alpha=alpha, cached=cached)
    return np.asarray(multihost_utils.process_allgather(ids, tiled=True))


def evaluate_translations(source, rows, mesh, cfg, graphdef, params, model_state) -> dict[str, float]:
    """A translation run's evaluation pairs decoded in training batches (this process's `rows`
    of each, on `mesh`), scored: BLEU, chrF and exact match."""
    from scalelab.data import pipeline
    hypotheses = []
    for index in range(source.eval_batches()):
        batch = source.eval_batch(index, rows)
        inputs = pipeline.to_global(mesh, {'inputs': batch['inputs']}, cfg.train.global_batch)['inputs']
        decoded = decode_rows(graphdef, params, model_state, inputs, max_len=cfg.data.max_target_len,
                              beam_size=cfg.data.eval_beam_size, alpha=cfg.data.eval_length_penalty)
        hypotheses += detokenize(source.tokenizer, decoded)
    hypotheses = hypotheses[:len(source.eval_texts)]
    return scores(hypotheses, [target for _, target in source.eval_texts])
