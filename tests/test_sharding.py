"""The same run on different meshes: same losses, and parameters sharded as the rules say."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from scalelab.core import parallel, weights
from scalelab.training import loop, plan, train
from tests.helpers import losses, tiny_lm

MESHES = {  # (data, fsdp, tensor) -> devices used
    'single': ((1, 1, 1), 1),
    'data8': ((8, 1, 1), 8),
    'mixed222': ((2, 2, 2), 8),
    'tensor8': ((1, 1, 8), 8),
}


def mesh_cfg(shape):
    # 8 heads and d_ff 64 divide by 8, so tensor parallelism really splits them. At lr 1e-2
    # Adam turns reordered float sums into ~4e-5 in a few parameters; 3e-3 keeps them below 2e-5.
    cfg = tiny_lm(**{'model.n_heads': 8, 'optim.learning_rate': 3e-3})
    cfg.mesh.update(data=shape[0], fsdp=shape[1], tensor=shape[2])
    return cfg


@pytest.fixture(scope='module')
def mesh_runs(tmp_path_factory):
    out = {}
    for name, (shape, n_devices) in MESHES.items():
        workdir = tmp_path_factory.mktemp(name)
        loop.run(mesh_cfg(shape), workdir, devices=jax.devices()[:n_devices])
        out[name] = workdir
    return out


def test_meshes_give_the_same_losses(mesh_runs):
    reference = np.array(losses(mesh_runs['single']))
    assert len(reference) == 20 and reference[-1] < reference[0] - 0.5  # it learns
    for name, workdir in mesh_runs.items():
        np.testing.assert_allclose(losses(workdir), reference, atol=1e-5, rtol=0, err_msg=name)


def test_meshes_give_the_same_parameters(mesh_runs):
    reference = weights.load_params_flat(mesh_runs['single'])
    for name, workdir in mesh_runs.items():
        jax.tree.map(functools.partial(np.testing.assert_allclose, atol=2e-5, rtol=0, err_msg=name),
                     weights.load_params_flat(workdir), reference)


def sharded_state(shape):
    the_plan = plan.make(mesh_cfg(shape), 8)
    prepared = train.setup(the_plan, parallel.make_mesh(the_plan.cfg.mesh))
    return jax.jit(prepared.init, out_shardings=prepared.shardings)()


def spec(array):
    return tuple(array.sharding.spec) + (None,) * (array.ndim - len(array.sharding.spec))


def test_parameters_are_sharded_as_the_rules_say():
    state = sharded_state((2, 2, 2))
    params = state['params']
    block = params['blocks'][0]
    # embed -> fsdp, vocab/heads/mlp -> tensor, head_dim and norms replicated
    assert spec(params['embed']['embedding']) == ('tensor', 'fsdp')
    assert spec(block['attn']['q']['kernel']) == ('fsdp', 'tensor', None)
    assert spec(block['attn']['o']['kernel']) == ('tensor', None, 'fsdp')
    assert spec(block['mlp']['up']['kernel']) == ('fsdp', 'tensor')
    assert spec(block['mlp']['down']['kernel']) == ('tensor', 'fsdp')
    assert spec(block['attn_norm']['scale']) == (None,)
    # each device holds 1/(fsdp*tensor) of a fully sharded matrix
    kernel = block['mlp']['up']['kernel']
    assert kernel.addressable_shards[0].data.size == kernel.size // 4
    # Adam moments are sharded like their parameters (FSDP shards optimizer state too) and
    # their first free dimension also over data (ZeRO-1); with none free, as the parameter.
    adam = state['opt_state'][1][0]
    assert adam.mu['blocks'][0]['mlp']['up']['kernel'].sharding == kernel.sharding
    assert spec(adam.mu['blocks'][0]['attn']['q']['kernel']) == ('fsdp', 'tensor', 'data')
    assert spec(adam.nu['blocks'][0]['attn_norm']['scale']) == ('data',)
    assert spec(adam.mu['embed']['embedding']) == ('tensor', 'fsdp')
    assert state['step'].sharding.spec == P()


def test_split_over_data_takes_the_first_free_divisible_dimension():
    mesh = parallel.make_mesh({'data': 4, 'fsdp': 2, 'tensor': 1}, jax.devices())
    split = parallel.split_over_data
    assert split(NamedSharding(mesh, P('fsdp', None)), (8, 12)).spec == P('fsdp', 'data')
    assert split(NamedSharding(mesh, P(None, None)), (6, 8)).spec == P(None, 'data')  # 6 does not divide by 4
    assert split(NamedSharding(mesh, P(None)), (6,)).spec == P(None)  # nowhere to put it
    assert split(NamedSharding(mesh, P()), (4, 4)).spec == P('data', None)  # a short spec is padded
    one_data = parallel.make_mesh({'data': 1, 'fsdp': 8, 'tensor': 1}, jax.devices())
    assert split(NamedSharding(one_data, P('fsdp', None)), (8, 8)).spec == P('fsdp', None)


def test_indivisible_dimension_stays_replicated():
    assert parallel.logical_to_spec(('embed', 'mlp'), (6, 64), {'data': 1, 'fsdp': 4, 'tensor': 2}) == P(None, 'tensor')
    # the same mesh axis is never used twice in one spec
    assert parallel.logical_to_spec(('act_batch', 'embed'), (8, 8), {'data': 2, 'fsdp': 2, 'tensor': 2}) == P(('data', 'fsdp'), None)


def test_activation_constraints_reach_the_compiled_step():
    """Logical activation constraints must appear in the lowered module (they
    silently vanish without a mesh context)."""
    the_plan = plan.make(mesh_cfg((2, 2, 2)), 8)
    cfg = the_plan.cfg
    mesh = parallel.make_mesh(cfg.mesh)
    prepared = train.setup(the_plan, mesh)
    batch = {k: jax.ShapeDtypeStruct((16, 32), np.int32) for k in ('inputs', 'targets')}
    with jax.set_mesh(mesh):
        text = jax.jit(train.train_step, static_argnums=0).lower(prepared.spec, prepared.abstract_state,
                                                                  batch).as_text()
    assert text.count('sharding_constraint') >= 2 * cfg.model.n_layers


def test_no_activation_is_regathered_whole_on_a_mesh_with_fsdp_and_tensor(tmp_path):
    """The embedding's rows used to come out split over d_model (the table's fsdp axis) and be
    gathered whole to be split by batch: XLA's "Involuntary full rematerialization" at compile
    time. A fresh compilation cache, so the step is really compiled and its warnings seen."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO
    done = subprocess.run([sys.executable, '-m', 'scalelab.run', '--config', 'tests/tiny_config.py',
                           f'--workdir={tmp_path / "run"}', '--cpu-devices=8', '--config.train.steps=1',
                           '--config.model.n_heads=8', '--config.mesh.data=2', '--config.mesh.fsdp=2',
                           '--config.mesh.tensor=2'], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'SCALELAB_COMPILATION_CACHE': str(tmp_path / 'cache')})
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'compiled in' in done.stdout  # compiled here, not read from a cache
    assert 'rematerialization' not in done.stderr, done.stderr[-3000:]
