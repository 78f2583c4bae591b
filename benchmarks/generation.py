"""Generation speed with the KV cache against the no-cache reference (a full forward pass per token).

    python benchmarks/generation.py --workdir runs/lm [--prompts 4] [--prompt-len 32] [--new 128]

Both are timed after a warm-up call (compilation excluded) on the same prompts;
the greedy tokens of both are compared. Prints the speed-up and writes
benchmarks/results/<host>-generation.json.
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
    p.add_argument('--workdir', required=True, help='a trained language-model run')
    p.add_argument('--prompts', type=int, default=4)
    p.add_argument('--prompt-len', type=int, default=32)
    p.add_argument('--new', type=int, default=128)
    p.add_argument('--out', default=None)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from harness import timed, write_result
    from scalelab.use import generate, inference
    from scalelab.core import runtime
    runtime.configure()
    lm = inference.load(args.workdir)
    graphdef, params = lm.graphdef, lm.params
    corpus = (REPO / 'scalelab' / 'loop.py').read_text()  # any real text will do for prompts
    prompts = [lm.tokenizer.encode(corpus[i * 97:])[:args.prompt_len] for i in range(args.prompts)]
    tokens, pad = generate.pad_prompts(prompts)
    key = jax.random.key(0)
    options = dict(max_new=args.new, temperature=0.0, top_k=0)

    def cached():
        return np.asarray(generate.generate_cached(graphdef, params, jnp.asarray(tokens), jnp.asarray(pad), key,
                                                   **options))

    def uncached():
        return np.asarray(generate.generate_uncached(graphdef, params, tokens, key, **options))

    timings, outputs = {}, {}
    for name, fn in (('cached', cached), ('uncached', uncached)):
        outputs[name], timings[name] = timed(fn)
    new_tokens = args.prompts * args.new
    result = dict(host=platform.node(), device=jax.devices()[0].device_kind, workdir=str(args.workdir),
                  prompts=args.prompts, prompt_len=args.prompt_len, new_tokens_per_prompt=args.new,
                  cached_s=timings['cached'], uncached_s=timings['uncached'],
                  cached_tokens_per_s=new_tokens / timings['cached'],
                  uncached_tokens_per_s=new_tokens / timings['uncached'],
                  speedup=timings['uncached'] / timings['cached'],
                  same_tokens=bool(np.array_equal(outputs['cached'], outputs['uncached'])))
    print(f'{args.prompts} prompts x {args.new} new tokens (prompt {args.prompt_len}): '
          f'KV cache {result["cached_tokens_per_s"]:,.0f} tok/s, no cache {result["uncached_tokens_per_s"]:,.0f} '
          f'tok/s: x{result["speedup"]:.1f}; identical greedy tokens: {result["same_tokens"]}')
    write_result(result, args.out, '{host}-generation.json')


if __name__ == '__main__':
    main()
