"""Generation: the KV cache gives exactly the tokens of full forward passes; sampling behaves."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalelab.training import loop
from scalelab.use import generate, inference
from tests.helpers import REPO, TEST_CACHE, tiny_lm

VARIANTS = {
    'rope': {},
    'learned_positions_scan': {'model.position': 'learned', 'model.max_len': 64, 'model.scan_layers': True},
    'gpt2_style': {'model.norm': 'layernorm', 'model.use_bias': True, 'model.position': 'learned',
                   'model.max_len': 64, 'model.tie_embeddings': True},
    # grouped-query attention: the cache holds the 2 (or 1) key/value heads, not the 4 query heads
    'gqa_qk_norm_softcaps': {'model.n_kv_heads': 2, 'model.qk_norm': True, 'model.attn_softcap': 5.0,
                             'model.logit_softcap': 10.0},
    'gqa_xla_scan': {'model.n_kv_heads': 1, 'model.attention': 'xla', 'model.scan_layers': True},
}


@pytest.fixture(scope='module', params=list(VARIANTS))
def trained(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(request.param)
    loop.run(tiny_lm(**{'train.steps': 30, **VARIANTS[request.param]}), workdir)
    lm = inference.load(workdir)
    return lm.model_cfg, lm.graphdef, lm.params


def encode(*texts):
    return [list(t.encode()) for t in texts]


def test_greedy_cached_equals_full_forward_reference(trained):
    _, graphdef, params = trained
    tokens, pad = generate.pad_prompts(encode('def main(', 'import os'))
    assert not pad.any()
    key = jax.random.key(0)
    cached = generate.generate_cached(graphdef, params, jnp.asarray(tokens), jnp.asarray(pad), key,
                                      max_new=16, temperature=0.0, top_k=0)
    reference = generate.generate_uncached(graphdef, params, tokens, key, max_new=16, temperature=0.0, top_k=0)
    np.testing.assert_array_equal(np.asarray(cached), np.asarray(reference))


def test_ragged_prompts_in_one_batch_match_each_prompt_alone(trained):
    _, graphdef, params = trained
    prompts = encode('x', 'class Foo(object):', 'return')
    tokens, pad = generate.pad_prompts(prompts)
    batched = np.asarray(generate.generate_cached(graphdef, params, jnp.asarray(tokens), jnp.asarray(pad),
                                                  jax.random.key(0), max_new=16, temperature=0.0, top_k=0))
    for row, prompt in enumerate(prompts):  # alone: no padding (the cache itself is checked above)
        alone = generate.generate_cached(graphdef, params, jnp.asarray([prompt], jnp.int32), jnp.zeros(1, jnp.int32),
                                         jax.random.key(0), max_new=16, temperature=0.0, top_k=0)
        np.testing.assert_array_equal(batched[row], np.asarray(alone)[0], err_msg=f'prompt {row}')


def test_sampling_is_reproducible_for_a_seed(trained):
    _, graphdef, params = trained
    tokens, pad = generate.pad_prompts(encode('def ', 'for i'))
    run = lambda seed: np.asarray(generate.generate_cached(
        graphdef, params, jnp.asarray(tokens), jnp.asarray(pad), jax.random.key(seed),
        max_new=32, temperature=1.0, top_k=20))
    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_top_k_never_picks_outside_the_top_k():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 256)), jnp.float32)
    allowed = np.argsort(-np.asarray(logits), axis=1)[:, :5]
    draws = jax.vmap(lambda key: generate.sample(logits, key, 1.5, 5))(jax.random.split(jax.random.key(0), 2000))
    for row in range(4):
        assert set(np.asarray(draws[:, row]).tolist()) <= set(allowed[row].tolist())
        assert len(set(np.asarray(draws[:, row]).tolist())) == 5  # and uses all of them
    np.testing.assert_array_equal(generate.sample(logits, jax.random.key(1), 0.0, 5), np.argmax(logits, axis=1))


def test_cli_prints_completions(tmp_path):
    loop.run(tiny_lm(**{'train.steps': 10}), tmp_path)
    done = subprocess.run([sys.executable, '-m', 'scalelab.generate', f'--workdir={tmp_path}', '--prompt', 'def f(',
                           '--prompt', 'import', '--max-new-tokens', '12', '--temperature', '0'], cwd=REPO,
                          env={**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '24 tokens in' in done.stderr
    # what it prints is the library's greedy continuation of each prompt, decoded
    lm = inference.load(tmp_path)
    tokens, pad = generate.pad_prompts([lm.tokenizer.encode(t) for t in ('def f(', 'import')])
    new = np.asarray(generate.generate_cached(lm.graphdef, lm.params, jnp.asarray(tokens), jnp.asarray(pad),
                                              jax.random.key(0), max_new=12, temperature=0.0, top_k=40))
    expected = ''.join(f'--- {prompt!r}\n{prompt}{lm.tokenizer.decode(row)}\n' for prompt, row in zip(('def f(', 'import'), new))
    assert done.stdout == expected
