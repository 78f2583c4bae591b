"""Stability knobs and muP's multipliers, each against an independent reference:
a float64 NumPy attention, hand-computed optimizer steps, and runs that must agree."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scalelab import data, models
from scalelab.core import parallel, tasks
from scalelab.core.errors import ConfigError
from scalelab.models import transformer
from scalelab.training import config, loop, optim, plan, train
from tests.helpers import losses, tiny_lm


def numpy_attention(q, k, v, mask, scale, softcap=0.0):
    """float64 attention, head by head: query head n reads key/value head n // (N / K)."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    B, L, N, H = q.shape
    K = k.shape[2]
    out = np.zeros((B, L, N, H))
    top = -np.inf
    for b in range(B):
        for n in range(N):
            scores = q[b, :, n] @ k[b, :, n // (N // K)].T * scale
            top = max(top, scores[mask[b]].max())
            if softcap:
                scores = softcap * np.tanh(scores / softcap)
            scores = np.where(mask[b], scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            out[b, :, n] = (probs / probs.sum(-1, keepdims=True)) @ v[b, :, n // (N // K)]
    return out, top


@pytest.mark.parametrize('kv_heads, softcap', [(4, 0.0), (2, 0.0), (1, 0.0), (2, 3.0)])
def test_attention_matches_float64_reference(kv_heads, softcap):
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (2, 7, 4, 8)) * 2
    k = jax.random.normal(keys[1], (2, 7, kv_heads, 8)) * 2
    v = jax.random.normal(keys[2], (2, 7, kv_heads, 8))
    mask = np.broadcast_to(np.tril(np.ones((7, 7), bool)), (2, 7, 7))
    expected, expected_max = numpy_attention(q, k, v, mask, 0.3, softcap)
    out, max_score = transformer.attention_einsum(q, k, v, jnp.asarray(mask), 0.3, softcap)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(max_score, expected_max, rtol=1e-5)
    np.testing.assert_allclose(transformer.max_attention_score(q, k, jnp.asarray(mask), 0.3), expected_max, rtol=1e-5)
    if not softcap:  # XLA's own kernel groups heads the same way
        xla = jax.nn.dot_product_attention(q, k, v, is_causal=True, scale=0.3, implementation='xla')
        np.testing.assert_allclose(xla, expected, rtol=1e-4, atol=1e-5)


def model_and_batch(**overrides):
    cfg = config.resolve(tiny_lm(**{'mesh.data': 1, **overrides}), 1)
    spec = data.spec(cfg.data)
    model = models.build(cfg.model, spec, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, cfg.data.seq_len), 0, spec.num_outputs)
    return cfg, model, tokens


def test_qk_norm_makes_attention_blind_to_the_scale_of_q_and_k():
    """Normalised per head, queries and keys scaled 10x give the same scores; without the
    norms the logits change. (A tiny norm_eps: the default's 1e-5 shows at 1e-4.)"""
    for qk_norm in (True, False):
        _, model, tokens = model_and_batch(**{'model.qk_norm': qk_norm, 'model.norm_eps': 1e-12})
        before = model(tokens)
        for block in model.blocks:
            block.attn.q.kernel[...] = block.attn.q.kernel[...] * 10
            block.attn.k.kernel[...] = block.attn.k.kernel[...] * 10
        after = model(tokens)
        if qk_norm:
            assert model.blocks[0].attn.q_norm.scale[...].shape == (8,)  # one head wide
            np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
        else:
            assert np.abs(np.asarray(after - before)).max() > 1e-2


def test_logit_soft_cap_bounds_the_logits_as_c_tanh():
    _, capped, tokens = model_and_batch(**{'model.logit_softcap': 0.5})
    _, plain, _ = model_and_batch()  # same seed, same parameters: capping adds none
    capped_logits, plain_logits = np.asarray(capped(tokens), np.float64), np.asarray(plain(tokens), np.float64)
    assert np.abs(capped_logits).max() < 0.5
    np.testing.assert_allclose(capped_logits, 0.5 * np.tanh(plain_logits / 0.5), rtol=1e-5, atol=1e-6)


def test_attention_soft_cap_changes_the_model_only_through_large_scores():
    _, capped, tokens = model_and_batch(**{'model.attn_softcap': 1e4})
    _, plain, _ = model_and_batch()
    np.testing.assert_allclose(capped(tokens), plain(tokens), rtol=1e-4, atol=1e-5)  # scores << the cap
    _, tight, _ = model_and_batch(**{'model.attn_softcap': 1e-3})
    assert np.abs(np.asarray(tight(tokens) - plain(tokens))).max() > 1e-3


def test_attention_logit_max_agrees_between_kernels():
    """The largest score the einsum form sees equals the one computed beside XLA's kernel."""
    _, einsum_model, tokens = model_and_batch(**{'model.attention': 'einsum', 'model.n_kv_heads': 2})
    _, xla_model, _ = model_and_batch(**{'model.attention': 'xla', 'model.n_kv_heads': 2})
    a = einsum_model.forward_with_stats(tokens)[1]['attn_logit_max']
    b = xla_model.forward_with_stats(tokens)[1]['attn_logit_max']
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(einsum_model(tokens), xla_model(tokens), rtol=1e-4, atol=1e-5)


def test_zero_inits_start_from_a_uniform_prediction():
    cfg, model, tokens = model_and_batch(**{'model.zero_readout': True, 'model.zero_query': True,
                                            'model.tie_embeddings': False})
    assert not np.any(np.asarray(model.blocks[0].attn.q.kernel[...]))
    assert not np.any(np.asarray(model.head.kernel[...]))
    batch = {'inputs': tokens, 'targets': tokens}
    np.testing.assert_allclose(tasks.loss('lm', model(tokens), batch), math.log(cfg.model.vocab_size), rtol=1e-6)


def loss_fn_parts(z_loss):
    the_plan = plan.make(tiny_lm(**{'mesh.data': 1, 'train.z_loss': z_loss}), 1)
    cfg = the_plan.cfg
    prepared = train.setup(the_plan, parallel.make_mesh(cfg.mesh, jax.devices()[:1]))
    state = prepared.init()
    tokens = jax.random.randint(jax.random.key(1), (4, cfg.data.seq_len + 1), 0, cfg.model.vocab_size)
    batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}
    total, (_, stats) = train._loss_fn(prepared.spec, state['params'], state['model_state'], batch,
                                       jax.random.key(0))
    model = nnx.merge(prepared.spec.graphdef, state['params'], state['model_state'])
    logits = np.asarray(model(batch['inputs']), np.float64)
    return total, stats, logits, np.asarray(batch['targets'])


def test_z_loss_adds_its_weight_times_mean_log_partition_squared():
    total, stats, logits, targets = loss_fn_parts(z_loss=0.1)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    cross_entropy = np.mean(log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0])
    np.testing.assert_allclose(stats['loss'], cross_entropy, rtol=1e-5)
    np.testing.assert_allclose(stats['z_loss'], 0.1 * np.mean(log_z ** 2), rtol=1e-5)
    np.testing.assert_allclose(total, cross_entropy + 0.1 * np.mean(log_z ** 2), rtol=1e-5)
    np.testing.assert_allclose(stats['logit_rms'], np.sqrt(np.mean(logits ** 2)), rtol=1e-5)
    total_off, stats_off, _, _ = loss_fn_parts(z_loss=0.0)
    assert 'z_loss' not in stats_off and float(total_off) == pytest.approx(cross_entropy, rel=1e-5)


def adamw_cfg(**overrides):
    cfg = optim.default_config()
    cfg.update({**dict(name='adamw', learning_rate=0.1, warmup_steps=0, schedule='constant', grad_clip=0.0,
                       weight_decay=0.5), **overrides})
    return cfg


def one_update(cfg, groups=None):
    """One step from zero gradients (Adam's own update is then 0): only decay moves the weights."""
    params = {'blocks': {'0': {'mlp': {'up': {'kernel': jnp.ones((2, 2))}}}}, 'head': {'kernel': jnp.ones((2, 2))}}
    tx, _ = optim.make(cfg, 10, groups=groups)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    return updates['blocks']['0']['mlp']['up']['kernel'][0, 0], updates['head']['kernel'][0, 0]


def test_mup_weight_decay_per_step_does_not_shrink_with_the_hidden_learning_rate():
    """MuAdam: a group at lr / 4 decays with 4 x weight_decay, so lr * weight_decay * p per step
    (0.1 * 0.5) for hidden and other weights alike."""
    groups = ({'hidden': 0.25, 'other': 1.0}, lambda n: 'hidden' if n.startswith('blocks') else 'other')
    hidden, other = one_update(adamw_cfg(), groups)
    np.testing.assert_allclose([hidden, other], [-0.05, -0.05], rtol=1e-6)


def test_independent_weight_decay_ignores_the_learning_rate():
    """p <- p - weight_decay * schedule/peak * p, at any learning rate and group multiplier."""
    groups = ({'hidden': 0.25, 'other': 1.0}, lambda n: 'hidden' if n.startswith('blocks') else 'other')
    for lr in (0.1, 0.001):
        hidden, other = one_update(adamw_cfg(independent_wd=True, learning_rate=lr), groups)
        np.testing.assert_allclose([hidden, other], [-0.5, -0.5], rtol=1e-6)
    # with a warmup the decay follows the schedule's shape: step 0 of a 4-step warmup is 0
    hidden, _ = one_update(adamw_cfg(independent_wd=True, warmup_steps=4, schedule='constant'))
    assert hidden == 0.0
    # and it skips norms' scales and biases like coupled decay
    params = {'norm': {'scale': jnp.ones(2)}}
    tx, _ = optim.make(adamw_cfg(independent_wd=True), 10)
    updates, _ = tx.update({'norm': {'scale': jnp.zeros(2)}}, tx.init(params), params)
    assert not np.any(np.asarray(updates['norm']['scale']))


MUP_BASE = {'model.d_model': 64, 'model.mup_base_width': 64, 'model.head_dim': 16, 'model.d_ff': 0,
            'model.tie_embeddings': False, 'optim.weight_decay': 0.1, 'train.steps': 12}


def test_mup_equals_standard_at_the_base_width(tmp_path):
    """Same seed, same hyperparameters, d_model = mup_base_width: muP's multipliers are all 1
    there, so every step's loss is the standard parametrization's."""
    loop.run(tiny_lm(**MUP_BASE, **{'model.parametrization': 'standard'}), tmp_path / 'sp')
    loop.run(tiny_lm(**MUP_BASE, **{'model.parametrization': 'mup'}), tmp_path / 'mup')
    sp, mup = losses(tmp_path / 'sp'), losses(tmp_path / 'mup')
    assert len(sp) == 12
    np.testing.assert_allclose(mup, sp, rtol=2e-5)
    assert sp[-1] < sp[0] - 0.3  # it trained


def test_mup_attention_scale_follows_the_head_size():
    """Fixed head size (head_dim set): the scale stays 1/sqrt(head size) at any width.
    Fixed head count: 1/head size relative to the base, i.e. half SP's at 4x width."""
    def scale(d_model, **model):
        cfg = config.resolve(tiny_lm(**{'model.d_model': d_model, 'model.d_ff': 0, 'model.tie_embeddings': False,
                                        'model.mup_base_width': 32, **model}), 8)
        return transformer.attention_scale(cfg.model)
    assert scale(128, **{'model.parametrization': 'mup', 'model.head_dim': 8}) == pytest.approx(8 ** -0.5)
    base_head = 32 // 4
    mup = scale(128, **{'model.parametrization': 'mup', 'model.n_heads': 4})
    assert mup == pytest.approx(math.sqrt(base_head) / (128 // 4))
    assert mup / scale(128, **{'model.n_heads': 4}) == pytest.approx(0.5)
    assert scale(32, **{'model.parametrization': 'mup', 'model.attn_mult': 2.0}) == pytest.approx(2 / math.sqrt(8))


@pytest.mark.parametrize('overrides, message', [
    ({'model.n_kv_heads': 3}, 'model.n_kv_heads=3: must divide model.n_heads=4'),
    ({'model.zero_readout': True}, 'model.zero_readout=True: needs model.tie_embeddings=False'),
    ({'model.attn_softcap': -1.0}, 'model.attn_softcap=-1.0: must be non-negative'),
    ({'model.output_mult': 0.0}, 'model.output_mult=0.0: must be positive'),
    ({'train.z_loss': -1e-4}, 'train.z_loss=-0.0001: must be non-negative'),
    ({'model.parametrization': 'mup', 'model.tie_embeddings': False},
     "model.d_ff=64: under model.parametrization='mup' it must be 0"),
])
def test_bad_stability_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace('.', r'\.')):
        config.resolve(tiny_lm(**overrides), 8)


def test_z_loss_needs_logits():
    cfg = config.base_config('mlp', 'teacher')
    cfg.train.z_loss = 1e-4
    with pytest.raises(ConfigError, match=r"train\.z_loss=0\.0001: needs logits"):
        config.resolve(cfg, 8)


def test_a_run_logs_logit_statistics(tmp_path):
    loop.run(tiny_lm(**{'train.steps': 6, 'train.log_every': 3, 'train.z_loss': 1e-3, 'model.qk_norm': True,
                        'model.n_kv_heads': 2}), tmp_path)
    import json
    lines = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    train_lines = [x for x in lines if 'interval_steps' in x]
    assert len(train_lines) == 2
    for line in train_lines:
        assert line['attn_logit_max'] > 0 and line['logit_rms'] > 0 and line['z_loss'] > 0
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['attn_logit_max'] == max(x['attn_logit_max'] for x in train_lines)


def test_grouped_query_attention_trains_alike_on_a_tensor_parallel_mesh(tmp_path):
    """2 key/value heads on a tensor axis of 4: they stay whole (replicated) while the 8 query
    heads split, and the losses are the single device's."""
    runs = {}
    for name, (shape, n_devices) in {'single': ((1, 1, 1), 1), 'mixed': ((2, 1, 4), 8)}.items():
        cfg = tiny_lm(**{'model.n_heads': 8, 'model.n_kv_heads': 2, 'model.qk_norm': True,
                         'optim.learning_rate': 3e-3})
        cfg.mesh.update(data=shape[0], fsdp=shape[1], tensor=shape[2])
        loop.run(cfg, tmp_path / name, devices=jax.devices()[:n_devices])
        runs[name] = np.array(losses(tmp_path / name))
    assert runs['single'][-1] < runs['single'][0] - 0.5
    np.testing.assert_allclose(runs['mixed'], runs['single'], atol=1e-5, rtol=0)
