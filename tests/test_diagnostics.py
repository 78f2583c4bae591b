"""Diagnostics: the norms a step reports against a float64 hand computation, the same
per-layer names with stacked layers, and loss-spike counting."""
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalelab.core import naming, parallel
from scalelab.training import diagnostics, loop, metrics, plan, train
from scalelab import data as data_lib
from tests.helpers import tiny_lm


@pytest.mark.parametrize('name, stacked, group', [
    ('blocks.3.attn.q.kernel', None, ('blocks.3.attn', False)),
    ('blocks.0.mlp_norm.scale', None, ('blocks.0.mlp_norm', False)),
    ('embed.embedding', None, ('embed', False)),
    ('final_norm.scale', None, ('final_norm', False)),
    ('blocks.attn.q.kernel', 'blocks', ('blocks.{}.attn', True)),
    ('layers.2.kernel', None, ('layers.2.kernel', False)),  # a family whose layer is one leaf
])
def test_group_of(name, stacked, group):
    assert diagnostics.group_of(name, stacked) == group


def one_step(cfg):
    """(params before, grads, updates, step metrics) of one real step, the grads and
    updates recomputed outside the step as the reference."""
    the_plan = plan.make(cfg, 1)
    cfg = the_plan.cfg
    mesh = parallel.make_mesh(cfg.mesh, jax.devices()[:1])
    prepared = train.setup(the_plan, mesh)
    state = jax.jit(prepared.init)()
    source = data_lib.load(cfg.data, cfg.train.global_batch, cfg.seed)
    batch = source.train_batch(0, slice(0, cfg.train.global_batch))
    params = jax.device_get(state['params'])
    with jax.set_mesh(mesh):
        new_state, step_metrics = jax.jit(train.train_step, static_argnums=0)(prepared.spec, state, batch)
    updates = jax.tree.map(lambda new, old: np.asarray(new, np.float64) - np.asarray(old, np.float64),
                           jax.device_get(new_state['params']), params)
    return cfg, params, updates, jax.device_get(step_metrics)


def test_norms_match_float64_hand_count():
    cfg, params, updates, m = one_step(tiny_lm(**{'log.norms': 'groups', 'optim.warmup_steps': 0}))
    flat_p, flat_u = naming.flatten(params), naming.flatten(updates)
    by_group = {}
    for name in flat_p:
        group, _ = diagnostics.group_of(name, None)
        p2, u2 = by_group.get(group, (0.0, 0.0))
        by_group[group] = (p2 + np.sum(np.asarray(flat_p[name], np.float64) ** 2),
                           u2 + np.sum(flat_u[name] ** 2))
    assert set(k.split('/', 1)[1] for k in m if k.startswith('param_norm/')) == set(by_group)
    assert {'blocks.0.attn', 'blocks.1.mlp', 'embed', 'final_norm'} <= set(by_group)
    for group, (p2, u2) in by_group.items():
        assert m[f'param_norm/{group}'] == pytest.approx(np.sqrt(p2), rel=1e-5)
        assert m[f'update_norm/{group}'] == pytest.approx(np.sqrt(u2), rel=1e-3, abs=1e-7)
        if p2 > 0:
            assert m[f'update_ratio/{group}'] == pytest.approx(np.sqrt(u2 / p2), rel=1e-3, abs=1e-7)
    assert m['param_norm'] == pytest.approx(np.sqrt(sum(p for p, _ in by_group.values())), rel=1e-5)
    assert m['update_norm'] == pytest.approx(np.sqrt(sum(u for _, u in by_group.values())), rel=1e-3)
    assert m['update_norm'] > 0  # the first step moves the weights (a warmup of 0 steps)
    # the global grad norm is the root of the groups' squares
    assert m['grad_norm'] == pytest.approx(np.sqrt(sum(m[k] ** 2 for k in m if k.startswith('grad_norm/'))),
                                           rel=1e-5)


def test_modes_report_what_they_say():
    _, _, _, none = one_step(tiny_lm(**{'log.norms': 'none'}))
    _, _, _, glob = one_step(tiny_lm(**{'log.norms': 'global'}))
    assert not any(k.startswith(('param_norm', 'update_')) for k in none)
    assert {'param_norm', 'update_norm', 'update_ratio'} <= set(glob)
    assert not any('/' in k for k in glob)
    assert glob['grad_norm'] == pytest.approx(float(none['grad_norm']), rel=1e-6)


def test_stacked_layers_give_the_looped_layers_norms():
    overrides = {'log.norms': 'groups', 'optim.warmup_steps': 0}
    looped = diagnostics.per_layer(one_step(tiny_lm(**overrides))[3])
    stacked = diagnostics.per_layer(one_step(tiny_lm(**{**overrides, 'model.scan_layers': True}))[3])
    names = sorted(k for k in looped if '/' in k)
    assert names == sorted(k for k in stacked if '/' in k)
    assert any(k.startswith('param_norm/blocks.1.') for k in names)
    for key in names:
        assert stacked[key] == pytest.approx(looped[key], rel=1e-4, abs=1e-7), key


def test_loss_spikes_counts_an_injected_spike_once():
    rng = np.random.default_rng(0)
    smooth = list(3.0 * np.exp(-np.arange(300) / 150) + 0.01 * rng.standard_normal(300))
    spikes = diagnostics.LossSpikes(window=50, threshold=6.0)
    z, count = spikes.add(smooth[:200])
    assert count == 0 and z < 6.0
    z, count = spikes.add([smooth[200] + 1.0])  # 1 nat above a curve that wobbles by 0.01
    assert count == 1 and z > 6.0 and isinstance(count, int) and isinstance(z, float)
    _, count = spikes.add(smooth[201:])
    assert count == 0
    assert diagnostics.LossSpikes(50, 6.0).add([1.0] * 5) == (None, 0)  # too little history to judge


def test_a_run_logs_norms_lr_and_counts_spikes_in_its_summary(tmp_path, monkeypatch):
    """A spike forced into the loss stream is counted once in the log line and the summary."""
    real, calls = diagnostics.LossSpikes.add, []

    def add_with_a_spike(self, losses):
        calls.append(len(losses))
        if len(calls) == 5:  # steps 21..25
            losses = [losses[0] + 100.0, *losses[1:]]
        return real(self, losses)
    monkeypatch.setattr(diagnostics.LossSpikes, 'add', add_with_a_spike)
    cfg = tiny_lm(**{'train.steps': 30, 'train.log_every': 5, 'log.spike_window': 20})
    summary = loop.run(cfg, tmp_path)
    lines = [r for r in metrics.read_jsonl(tmp_path / 'metrics.jsonl') if 'loss' in r]
    assert [r['loss_spikes'] for r in lines] == [0, 0, 0, 0, 1, 0]
    assert summary['loss_spikes'] == 1
    for line in lines:
        assert line['lr'] >= 0 and line['param_norm'] > 0 and 'update_ratio/blocks.0.attn' in line


def test_loss_spike_z_scores_by_hand():
    """z = (loss - mean) / sample standard deviation of the window before it (statistics.stdev),
    from the tenth loss of history on; the largest of a call's losses; a non-finite loss skipped,
    not an end; a flat window gives z = 0; a z equal to the threshold is not a spike."""
    window = [float(x) for x in range(1, 11)]
    z_hand = (20.0 - statistics.mean(window)) / statistics.stdev(window)
    spikes = diagnostics.LossSpikes(window=10, threshold=6.0)
    assert spikes.add(window[:9]) == (None, 0)
    largest, count = spikes.add([window[9], float('nan'), 20.0])
    assert largest == pytest.approx(z_hand, rel=1e-12) and count == 0
    again = diagnostics.LossSpikes(window=10, threshold=6.0)
    again.add(window)
    assert again.add([20.0, 5.5])[0] == pytest.approx(z_hand, rel=1e-12)   # the largest, not the last
    at_threshold = diagnostics.LossSpikes(window=10, threshold=largest)
    at_threshold.add(window)
    assert at_threshold.add([20.0]) == (largest, 0)
    flat = diagnostics.LossSpikes(window=10, threshold=6.0)
    flat.add([2.0] * 10)
    assert flat.add([3.0]) == (0.0, 0)


def test_update_ratio_and_group_sums_by_hand():
    """The ratio is update over param, 0 where the parameters are zero; sums of squares run in
    float32 even for bfloat16 leaves (256^2 + 1 = 65537, which bfloat16 rounds to 65536); a
    layout that does not match the tree is refused."""
    ratio = diagnostics._ratio(jnp.array([0.25, 0.3]), jnp.array([0.5, 0.0]))
    assert ratio.tolist() == [0.5, 0.0]
    leaf = jnp.array([256.0, 1.0], jnp.bfloat16)
    assert float(diagnostics.group_sq_sums([leaf], (('w', False),))['w']) == 65537.0
    with pytest.raises(ValueError):
        diagnostics.group_sq_sums([leaf, leaf], (('w', False),))
