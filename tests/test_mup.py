"""muP: the coordinate check and per-layer learning rates."""
import numpy as np
import pytest

from scalelab import models
from scalelab.training import config, mup, optim
from tests.helpers import tiny_lm

WIDTHS = [64, 256, 1024]


def coord_cfg(parametrization):
    cfg = tiny_lm(**{'model.n_layers': 2, 'model.head_dim': 16, 'model.d_ff': 0, 'model.tie_embeddings': False,
                     'model.parametrization': parametrization, 'model.mup_base_width': 64,
                     'train.global_batch': 8, 'optim.learning_rate': 1e-2, 'optim.schedule': 'constant',
                     'optim.warmup_steps': 0, 'optim.weight_decay': 0.0, 'optim.grad_clip': 0.0})
    cfg.mesh.data = 1
    return cfg


@pytest.mark.slow
def test_coordinate_check():
    """After 3 steps at a large learning rate every layer's mean |activation| stays
    within 1.5x across widths 64..1024 under muP; under the standard
    parametrization the readout's grows with width."""
    mup_scales = mup.coordinate_check(coord_cfg('mup'), WIDTHS, steps=3)
    sp_scales = mup.coordinate_check(coord_cfg('standard'), WIDTHS, steps=3)
    print({w: {k: round(v, 3) for k, v in s.items()} for w, s in mup_scales.items()})
    print({w: {k: round(v, 3) for k, v in s.items()} for w, s in sp_scales.items()})
    for layer, ratio in mup.spread(mup_scales).items():
        assert ratio < 1.5, (layer, ratio)
    readout = [sp_scales[w]['logits'] for w in WIDTHS]  # seen: 1.05, 2.83, 5.99
    assert readout[-1] > 3 * readout[0] and max(readout) == readout[-1]
    assert mup.spread(sp_scales)['logits'] > 3 * mup.spread(mup_scales)['logits']


def test_mup_learning_rate_groups():
    cfg = config.resolve(coord_cfg('mup'), 1).model.copy_and_resolve_references()
    cfg.d_model = 256
    scales, group_of = models.lr_groups(cfg)
    assert scales == {'hidden': 0.25, 'other': 1.0}
    assert group_of('blocks.1.attn.q.kernel') == 'hidden' and group_of('blocks.mlp.down.kernel') == 'hidden'
    for name in ('embed.embedding', 'head.kernel', 'blocks.0.attn_norm.scale', 'blocks.0.attn.q.bias'):
        assert group_of(name) == 'other', name
    assert models.lr_groups(config.resolve(coord_cfg('standard'), 1).model) is None


def test_mup_hidden_updates_are_scaled_by_width():
    """One Adam step moves a hidden weight by lr / width_mult and the readout by lr."""
    import jax.numpy as jnp
    cfg = optim.default_config()
    cfg.update(name='adam', learning_rate=0.1, warmup_steps=0, schedule='constant', grad_clip=0.0,
               weight_decay=0.0)
    params = {'blocks': {'0': {'attn': {'q': {'kernel': jnp.zeros((4, 4))}}}}, 'head': {'kernel': jnp.zeros((4, 4))}}
    groups = ({'hidden': 0.25, 'other': 1.0}, lambda n: 'hidden' if n.startswith('blocks') else 'other')
    tx, _ = optim.make(cfg, 10, groups=groups)
    grads = {'blocks': {'0': {'attn': {'q': {'kernel': jnp.ones((4, 4))}}}}, 'head': {'kernel': jnp.ones((4, 4))}}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates['blocks']['0']['attn']['q']['kernel'], -0.025, rtol=1e-4)
    np.testing.assert_allclose(updates['head']['kernel'], -0.1, rtol=1e-4)


def test_mup_needs_an_untied_readout():
    with pytest.raises(ValueError, match="parametrization='mup': needs model.tie_embeddings=False"):
        config.resolve(tiny_lm(**{'model.parametrization': 'mup'}), 8)
