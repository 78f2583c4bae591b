"""Every model family trains with the same sharded step: meshes agree, a tiny
batch is overfitted, and parameter and FLOP counts match independent references."""
import functools

import jax
import numpy as np
import pytest
from flax import nnx

from scalelab import models
from scalelab.core import parallel
from scalelab.models import layers
from scalelab.science import flops
from scalelab.training import config, loop, plan, train
from tests.helpers import STDLIB_JSON, losses, tiny_lm


def small(family: str, **overrides):
    """A few-second config per family; images are scikit-learn's 8x8 digits."""
    if family == 'transformer':
        cfg = tiny_lm(**{'model.n_heads': 8})
    elif family == 'lstm':
        cfg = config.base_config('lstm', 'text')
        cfg.model.update(d_embed=16, d_hidden=32)
        cfg.data.update(path=STDLIB_JSON, seq_len=32, eval_fraction=0.2, eval_tokens=1024)
    elif family == 'regression':
        cfg = config.base_config('mlp', 'teacher')
        cfg.data.update(in_dim=8, width=16, depth=1, eval_examples=32)
        cfg.model.update(width=32, depth=2, activation='gelu')
    else:
        cfg = config.base_config(family, 'images')
        cfg.data.dataset = 'digits'
        cfg.model.update(**{'mlp': dict(width=32, depth=2),
                            'cnn': dict(channels=8, depth=2, head_width=16),
                            'resnet': dict(width=8, stages=2, blocks_per_stage=1, norm='batchnorm', groups=4)}[family])
    cfg.train.update(global_batch=16, steps=5, log_every=1, eval_every=0)
    cfg.optim.update(learning_rate=1e-2, warmup_steps=0, schedule='constant')
    cfg.checkpoint.update(every_steps=1000, async_save=False)
    for key, value in overrides.items():
        section, name = key.split('.')
        cfg[section][name] = value
    return cfg


FAMILIES = ['mlp', 'cnn', 'resnet', 'lstm', 'regression', 'transformer']
RESNET_NORMS = ['none', 'layernorm', 'groupnorm']


def run(cfg, workdir, mesh):
    cfg.mesh.update(data=mesh[0], fsdp=mesh[1], tensor=mesh[2])
    return loop.run(cfg, workdir, devices=jax.devices()[:int(np.prod(mesh))])


@pytest.mark.parametrize('family', FAMILIES[:-1] + [f'resnet-{n}' for n in RESNET_NORMS])
def test_one_device_and_a_222_mesh_give_the_same_losses(tmp_path, family):
    name, _, norm = family.partition('-')
    overrides = {'model.norm': norm} if norm else {}
    single = run(small(name, **overrides), tmp_path / 'single', (1, 1, 1))
    sharded = run(small(name, **overrides), tmp_path / 'sharded', (2, 2, 2))
    np.testing.assert_allclose(losses(tmp_path / 'sharded'), losses(tmp_path / 'single'), atol=1e-5, rtol=1e-5)
    assert single['eval_loss'] == pytest.approx(sharded['eval_loss'], abs=1e-5)
    assert np.isfinite(single['eval_loss'])


def test_batch_norm_statistics_live_in_the_state_and_move(tmp_path):
    summary = run(small('resnet'), tmp_path / 'bn', (2, 2, 2))
    assert summary['model_state_size'] > 0  # running means and variances
    prepared = train.setup(plan.make(small('resnet'), 1),
                           parallel.make_mesh({'data': 1, 'fsdp': 1, 'tensor': 1}, jax.devices()[:1]))
    fresh = jax.jit(prepared.init)()['model_state']
    import orbax.checkpoint as ocp
    with ocp.CheckpointManager((tmp_path / 'bn' / 'checkpoints').absolute()) as mgr:
        saved = mgr.restore(mgr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
             zip(jax.tree.leaves(saved.state['model_state']), jax.tree.leaves(fresh))]
    assert len(moved) > 0 and max(moved) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize('family, threshold', [('mlp', 0.02), ('cnn', 0.02), ('resnet', 0.02), ('lstm', 0.1),
                                               ('regression', 1e-3), ('transformer', 0.1)])
def test_overfits_a_tiny_batch(tmp_path, family, threshold):
    capacity = {'model.d_hidden': 128, 'optim.learning_rate': 1e-2} if family == 'lstm' else {}  # 512 bytes to learn
    cfg = small(family, **{'data.train_examples': 16, 'train.steps': 300, 'train.log_every': 10,
                           'optim.learning_rate': 3e-3, 'optim.weight_decay': 0.0, **capacity})
    cfg.mesh.data = 1
    loop.run(cfg, tmp_path, devices=jax.devices()[:1])
    trace = losses(tmp_path)
    assert trace[-1] < threshold < trace[0], (trace[0], trace[-1])


def model_and_spec(cfg):
    the_plan = plan.make(cfg, 1)
    return the_plan, the_plan.spec


@pytest.mark.parametrize('family, overrides', [
    ('mlp', {}), ('mlp', {'model.use_bias': False, 'model.depth': 0}),
    ('cnn', {}), ('cnn', {'model.depth': 3, 'model.kernel_size': 5}),
    ('resnet', {}), ('resnet', {'model.norm': 'none', 'model.stages': 3}), ('resnet', {'model.norm': 'groupnorm'}),
    ('lstm', {}), ('lstm', {'model.n_layers': 3}), ('regression', {}),
])
def test_parameter_count_equals_arrays_and_hand_formula(family, overrides):
    the_plan, spec = model_and_spec(small(family, **overrides))
    cfg = the_plan.cfg
    _, params, _ = models.split_abstract(cfg.model, spec)
    counted = flops.count_params(nnx.to_pure_dict(params), models.family(cfg.model.name).EMBEDDING_PARAMS)
    assert counted == flops.param_counts(cfg.model, spec)


@pytest.mark.parametrize('family, overrides', [
    ('mlp', {'model.width': 512, 'model.depth': 3}),
    ('cnn', {'model.channels': 64, 'model.depth': 2, 'model.head_width': 256}),
    ('resnet', {'model.width': 64, 'model.stages': 2, 'model.norm': 'none'}),
    # XLA counts a while loop's body once, so the LSTM is checked on one time step.
    ('lstm', {'model.d_embed': 128, 'model.d_hidden': 256, 'data.seq_len': 1}),
    ('regression', {'model.width': 512, 'model.depth': 2, 'data.in_dim': 256}),
])
def test_forward_flops_match_xla_cost_analysis(family, overrides):
    """Analytic forward FLOPs per example agree with the compiled forward pass
    within 10% (XLA also counts activations, pooling and the like)."""
    the_plan, spec = model_and_spec(small(family, **overrides))
    cfg = the_plan.cfg
    prepared = train.setup(the_plan, parallel.make_mesh(cfg.mesh, jax.devices()[:1]))
    state = prepared.abstract_state
    batch = {'inputs': jax.ShapeDtypeStruct((16, *spec.input_shape), np.int32 if spec.task == 'lm' else np.float32)}
    forward = functools.partial(train._forward, prepared.spec, train=False, rngs=None)
    compiled = jax.jit(forward).lower(state['params'], state['model_state'], batch).compile()
    xla = compiled.cost_analysis()['flops'] / 16
    assert flops.forward_flops_per_example(cfg.model, spec) == pytest.approx(xla, rel=0.10)


@pytest.mark.parametrize('n, k, stride, expected', [
    (8, 3, 1, 2 + 3 * 6 + 2),   # SAME: the edge outputs see 2 of 3 taps
    (7, 1, 1, 7), (8, 3, 2, 2 + 3 * 3), (28, 5, 1, 3 + 4 + 5 * 24 + 4 + 3)])
def test_conv_taps_by_hand(n, k, stride, expected):
    assert layers.conv_taps(n, k, stride) == expected


def test_a_family_that_cannot_learn_the_task_is_refused():
    cfg = config.base_config('cnn', 'text')
    with pytest.raises(ValueError, match=r"model.name='cnn' cannot learn data.name='text' \(task lm\); "
                                         r'it handles classification'):
        config.resolve(cfg, 1)
