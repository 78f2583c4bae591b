"""Translation of a run's whole evaluation set: BLEU and speed of greedy and beam search,
each with the decoder cache against the no-cache reference (the decoder rerun over every prefix).

    python benchmarks/translation.py --workdir runs/translate [--beam-size 4] [--batch 100]

Timed after a warm-up call (compilation excluded); the cached and uncached token ids are
compared. Prints a table and a few sample translations; writes
benchmarks/results/<host>-translation.json.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', required=True, help='a trained seq2seq run')
    p.add_argument('--beam-size', type=int, default=4)
    p.add_argument('--length-penalty', type=float, default=0.6)
    p.add_argument('--batch', type=int, default=100, help='sources per decoding call')
    p.add_argument('--samples', type=int, default=6, help='translations printed')
    p.add_argument('--out', default=None)
    args = p.parse_args()

    import jax
    import numpy as np

    from harness import timed, write_result
    from scalelab.models import decoding
    from scalelab.training import translation_eval
    from scalelab.use import translate
    from scalelab.core import runtime
    from scalelab.data import translation
    runtime.configure()
    translator = translate.load(args.workdir)
    source_cfg = translator.data_cfg
    pairs = translation.corpus(source_cfg).eval
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    encoded, _ = translator.encode(sources)
    batches = [encoded[i:i + args.batch] for i in range(0, len(encoded), args.batch)]
    batches[-1] = np.concatenate([batches[-1], np.zeros((args.batch - len(batches[-1]), encoded.shape[1]),
                                                        encoded.dtype)])  # one compiled shape

    def decode(beam_size, cached):
        return np.concatenate([np.asarray(jax.block_until_ready(decoding.translate_ids(
            translator.graphdef, translator.params, {}, batch, max_len=source_cfg.max_target_len,
            beam_size=beam_size, alpha=args.length_penalty, cached=cached))) for batch in batches])[:len(sources)]

    result = dict(host=platform.node(), device=jax.devices()[0].device_kind, workdir=str(args.workdir),
                  sentences=len(sources), batch=args.batch, length_penalty=args.length_penalty,
                  signatures=translation_eval.signatures(), searches={})
    samples = {}
    for name, beam_size in (('greedy', 1), (f'beam{args.beam_size}', args.beam_size)):
        ids, seconds = {}, {}
        for cached in (True, False):
            ids[cached], seconds[cached] = timed(lambda: decode(beam_size, cached))
        hypotheses = translation_eval.detokenize(translator.tokenizer, ids[True])
        metrics = translation_eval.scores(hypotheses, references)
        samples[name] = hypotheses
        result['searches'][name] = dict(
            beam_size=beam_size, **{k.removeprefix('eval_'): v for k, v in metrics.items()},
            cached_s=seconds[True], uncached_s=seconds[False],
            cached_sentences_per_s=len(sources) / seconds[True], uncached_sentences_per_s=len(sources) / seconds[False],
            speedup=seconds[False] / seconds[True], same_tokens=bool(np.array_equal(ids[True], ids[False])))
    print(f'{len(sources)} held-out sentences, batches of {args.batch}, {result["device"]}')
    print(f'{"search":>8} {"BLEU":>7} {"chrF":>7} {"exact":>7} {"cached/s":>9} {"no cache/s":>10} {"x":>5}  same')
    for name, r in result['searches'].items():
        print(f'{name:>8} {r["bleu"]:7.2f} {r["chrf"]:7.2f} {r["exact_match"]:7.3f} {r["cached_sentences_per_s"]:9.1f} '
              f'{r["uncached_sentences_per_s"]:10.1f} {r["speedup"]:5.1f}  {r["same_tokens"]}')
    print(result['signatures']['bleu_signature'])
    result['samples'] = [dict(source=s, reference=r, **{name: h[i] for name, h in samples.items()})
                         for i, (s, r) in enumerate(zip(sources, references)) if i < args.samples]
    for sample in result['samples']:
        print(f'  {sample["source"]!r} -> {sample[f"beam{args.beam_size}"]!r} (reference {sample["reference"]!r})')
    write_result(result, args.out, '{host}-translation.json')


if __name__ == '__main__':
    main()
