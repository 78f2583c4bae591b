"""Sample from a trained language model, with a KV cache.

    python -m scalelab.generate --workdir runs/lm --prompt "def main(" --max-new-tokens 200 \\
        --temperature 0.8 --top-k 40 --seed 0 [--prompt "import os" ...]

The prompts are left-padded into one batch; the prompt is processed at once
(prefill) and each new token costs one position against the cached keys and
values. Temperature 0 is greedy decoding. Text goes in and comes out through
the workdir's own tokenizer; parameters are restored from its latest
checkpoint, sharded by the same rules as in training (scalelab.inference).
"""
from __future__ import annotations

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scalelab.core import cli


def sample(logits_BxV: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
    """Greedy when temperature is 0; else softmax(logits / T) over the top k (0: all)."""
    if temperature == 0:
        return jnp.argmax(logits_BxV, axis=-1)
    logits_BxV = logits_BxV.astype(jnp.float32) / temperature
    if top_k:
        kth_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
    return jax.random.categorical(key, logits_BxV, axis=-1)


def pad_prompts(prompts: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded (B, P) tokens and the padding of each row."""
    length = max(len(p) for p in prompts)
    if min(len(p) for p in prompts) == 0:
        raise ValueError('every prompt needs at least one token')
    tokens = np.zeros((len(prompts), length), np.int32)
    for row, prompt in enumerate(prompts):
        tokens[row, length - len(prompt):] = prompt
    return tokens, np.array([length - len(p) for p in prompts], np.int32)


@functools.partial(jax.jit, static_argnames=('graphdef', 'max_new', 'temperature', 'top_k', 'dtype'))
def generate_cached(graphdef, params, tokens_BxP, pad_B, key, *, max_new: int, temperature: float, top_k: int,
                    dtype=jnp.float32) -> jax.Array:
    """(B, max_new) new tokens: one prefill, then one cached step per token (a lax.scan)."""
    model = nnx.merge(graphdef, params)
    batch, prompt = tokens_BxP.shape
    cache = model.init_cache(batch, prompt + max_new, dtype)
    key_positions_BxS = jnp.arange(prompt + max_new)[None, :] - pad_B[:, None]
    logits, cache = model.decode(tokens_BxP, cache, jnp.arange(prompt)[None, :] - pad_B[:, None],
                                 key_positions_BxS, 0)
    first = sample(logits[:, -1], jax.random.fold_in(key, 0), temperature, top_k)

    def step(carry, t):
        token_B, cache = carry
        index = prompt + t - 1
        logits, cache = model.decode(token_B[:, None], cache, (index - pad_B)[:, None], key_positions_BxS, index)
        token_B = sample(logits[:, -1], jax.random.fold_in(key, t), temperature, top_k)
        return (token_B, cache), token_B

    _, rest = jax.lax.scan(step, (first, cache), jnp.arange(1, max_new))
    return jnp.concatenate([first[:, None], rest.T], axis=1)


@functools.partial(jax.jit, static_argnames='graphdef')
def last_logits(graphdef, params, tokens_BxL) -> jax.Array:
    """(B, V) logits of the last position after a full forward pass."""
    return nnx.merge(graphdef, params)(tokens_BxL)[:, -1]


def generate_uncached(graphdef, params, tokens_BxP, key, *, max_new: int, temperature: float,
                      top_k: int) -> jax.Array:
    """The reference: a full forward pass over the whole sequence for every new
    token (prompts of equal length, no padding)."""
    tokens = jnp.asarray(tokens_BxP)
    out = []
    for t in range(max_new):
        token = sample(last_logits(graphdef, params, tokens), jax.random.fold_in(key, t), temperature, top_k)
        out.append(token)
        tokens = jnp.concatenate([tokens, token[:, None]], axis=1)
    return jnp.stack(out, axis=1)


def cache_bytes_per_position(model_cfg, batch: int, dtype=jnp.float32) -> int:
    """Bytes the KV cache holds per position: keys and values of every layer's key/value heads."""
    head = model_cfg.d_model // model_cfg.n_heads
    return 2 * model_cfg.n_layers * batch * model_cfg.n_kv_heads * head * jnp.dtype(dtype).itemsize


def memory_bytes() -> int:
    """What the first device can hold: its memory limit on an accelerator, the machine's RAM on CPU."""
    import os
    stats = jax.devices()[0].memory_stats() or {}
    if stats.get('bytes_limit'):
        return int(stats['bytes_limit'])
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = cli.ArgumentParser(prog='python -m scalelab.generate', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', required=True)
    p.add_argument('--prompt', action='append', required=True, help='repeat for a batch of prompts')
    p.add_argument('--max-new-tokens', type=int, default=200)
    p.add_argument('--temperature', type=float, default=0.8)
    p.add_argument('--top-k', type=int, default=40, help='0: sample from the whole vocabulary')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-cache', action='store_true', help='full forward pass per token (the slow reference)')
    args = p.parse_args(argv)
    if args.max_new_tokens < 1 or args.temperature < 0 or args.top_k < 0:
        p.error('need --max-new-tokens >= 1, --temperature >= 0, --top-k >= 0')
    from scalelab.use import inference
    from scalelab.core import runtime
    from scalelab.data import tokenizer
    from scalelab.core.errors import ConfigError
    runtime.configure()
    try:
        lm = inference.load(args.workdir)
    except (inference.WorkdirError, tokenizer.TokenizerError, ConfigError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    prompts = [lm.tokenizer.encode(text) for text in args.prompt]
    if args.no_cache and len({len(x) for x in prompts}) > 1:
        p.error('--no-cache needs prompts of equal length (in tokens)')
    try:
        tokens, pad = pad_prompts(prompts)
    except ValueError as e:
        p.error(f'{e}: an empty --prompt')
    total = tokens.shape[1] + args.max_new_tokens
    if lm.model_cfg.position == 'learned' and total > lm.model_cfg.max_len:
        p.error(f'prompt ({tokens.shape[1]} tokens) + --max-new-tokens={args.max_new_tokens} exceed the '
                f'model\'s {lm.model_cfg.max_len} learned positions')
    per_position, budget = cache_bytes_per_position(lm.model_cfg, len(prompts)), memory_bytes() // 2
    if not args.no_cache and total * per_position > budget:
        fits = budget // per_position - tokens.shape[1]
        p.error(f'--max-new-tokens={args.max_new_tokens}: the KV cache of {total:,} positions would need '
                f'{total * per_position / 2 ** 30:,.1f} GiB, more than half of this device\'s '
                f'{2 * budget / 2 ** 30:.1f} GiB; at most {max(fits, 0):,} new tokens fit')
    if total > lm.context:
        print(f'warning: prompt ({tokens.shape[1]} tokens) + {args.max_new_tokens} new tokens run past the '
              f'{lm.context} tokens of context the model was trained on; text beyond them is out of its training',
              file=sys.stderr)
    key = jax.random.key(args.seed)
    options = dict(max_new=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k)
    start = time.perf_counter()
    if args.no_cache:
        new = generate_uncached(lm.graphdef, lm.params, tokens, key, **options)
    else:
        new = generate_cached(lm.graphdef, lm.params, jnp.asarray(tokens), jnp.asarray(pad), key, **options)
    new = np.asarray(jax.device_get(new))
    seconds = time.perf_counter() - start
    for text, row in zip(args.prompt, new):
        print(f'--- {text!r}')
        print(text + lm.tokenizer.decode(row))
    print(f'--- {new.size} tokens in {seconds:.2f}s (including compilation)', file=sys.stderr)
    return 0
