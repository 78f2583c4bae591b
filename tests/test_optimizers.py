"""Lion, Adafactor, Muon and schedule-free AdamW in real runs: the same losses on every mesh
as on one device, a resume bit-exact, their state counted in the summary, Muon's split of
the transformer and its muP rule, schedule-free's evaluated and deployed average, and the
configs they refuse. Their update rules: test_optim.py."""
import functools

import jax
import numpy as np
import pytest

from scalelab import models
from scalelab.core import naming, parallel, weights
from scalelab.core.errors import ConfigError
from scalelab.training import config, loop, plan, train
from tests.helpers import losses, tiny_lm
from tests.test_families import small

NEW = ('lion', 'adafactor', 'muon', 'schedule_free_adamw')
# Lion's sign steps are full-size; Adafactor's are relative to each parameter's RMS
RATES = {'adamw': 3e-3, 'lion': 1e-3, 'adafactor': 3e-2, 'muon': 3e-3, 'schedule_free_adamw': 3e-3}
MESHES = {'single': ((1, 1, 1), 1), 'mixed222': ((2, 2, 2), 8)}  # data, fsdp and tensor at once


def cfg_for(name, steps=20, mesh=(1, 1, 1), **overrides):
    constant = {'optim.schedule': 'constant'} if name == 'schedule_free_adamw' else {}  # it averages instead
    cfg = tiny_lm(**{'model.n_heads': 8, 'optim.name': name, 'optim.learning_rate': RATES[name],
                     'train.steps': steps, **constant, **overrides})
    cfg.mesh.update(data=mesh[0], fsdp=mesh[1], tensor=mesh[2])
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize('name', NEW)
def test_every_mesh_trains_as_one_device(tmp_path, name):
    runs = {}
    for mesh, (shape, n_devices) in MESHES.items():
        runs[mesh] = tmp_path / mesh
        summary = loop.run(cfg_for(name, mesh=shape), runs[mesh], devices=jax.devices()[:n_devices])
    reference = np.array(losses(runs['single']))
    assert reference[-1] < reference[0] - 0.3  # it learns
    assert summary['optimizer'] == name
    for mesh, workdir in runs.items():
        np.testing.assert_allclose(losses(workdir), reference, atol=2e-5, rtol=0, err_msg=mesh)
        jax.tree.map(functools.partial(np.testing.assert_allclose, atol=5e-5, rtol=0, err_msg=mesh),
                     weights.load_params_flat(workdir), weights.load_params_flat(runs['single']))


@pytest.mark.slow
@pytest.mark.parametrize('name', NEW)
def test_a_resumed_run_is_bit_exact(tmp_path, name):
    """10 steps, then resumed to 20 (a constant schedule may be extended), against 20 at once."""
    constant = {'optim.schedule': 'constant'}
    loop.run(cfg_for(name, 10, **constant), tmp_path / 'resumed', devices=jax.devices()[:1])
    loop.run(cfg_for(name, 20, **constant), tmp_path / 'resumed', devices=jax.devices()[:1])
    loop.run(cfg_for(name, 20, **constant), tmp_path / 'once', devices=jax.devices()[:1])
    np.testing.assert_array_equal(losses(tmp_path / 'resumed'), losses(tmp_path / 'once'))
    jax.tree.map(np.testing.assert_array_equal, weights.load_params_flat(tmp_path / 'resumed'),
                 weights.load_params_flat(tmp_path / 'once'))


def state_bytes(name):
    """(parameter name -> shape, the optimizer state's bytes) of the tiny LM under `name`."""
    the_plan = plan.make(cfg_for(name), 1)
    abstract = train.setup(the_plan, parallel.make_mesh(the_plan.cfg.mesh, jax.devices()[:1])).abstract_state
    shapes = {naming.name(path): leaf.shape for path, leaf in jax.tree_util.tree_flatten_with_path(abstract['params'])[0]}
    return shapes, sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(abstract['opt_state']))


def test_optimizer_state_is_counted_by_hand(tmp_path):
    """AdamW keeps two float32 moments per parameter, Lion one, Muon one for its matrices and
    two (AdamW's) for the rest; Adafactor one per parameter below 128 x 128. Each also holds
    step counters (and Muon its 3 Newton-Schulz coefficients): under 64 bytes."""
    shapes, adamw = state_bytes('adamw')
    sizes = {n: int(np.prod(shape)) for n, shape in shapes.items()}
    total = sum(sizes.values())
    matrices = models.hidden_matrices(tiny_lm().model)
    hidden = sum(size for n, size in sizes.items() if matrices(n, len(shapes[n])) is not None)
    assert 0 < hidden < total
    moments = {'adamw': 8 * total, 'lion': 4 * total, 'muon': 4 * hidden + 8 * (total - hidden),
               'adafactor': 4 * total + 8 * len(sizes),  # its unused row and column statistics: one float each
               'schedule_free_adamw': 8 * total}  # the second moment and z
    for name, expected in moments.items():
        counted = adamw if name == 'adamw' else state_bytes(name)[1]
        assert 0 <= counted - expected < 64, (name, counted, expected)
    summary = loop.run(cfg_for('muon', 2), tmp_path / 'muon', devices=jax.devices()[:1])
    assert summary['optimizer'] == 'muon' and summary['optimizer_state_bytes'] == state_bytes('muon')[1]


def test_muon_takes_the_transformers_hidden_matrices_with_their_axes():
    matrices = models.hidden_matrices(config.resolve(tiny_lm(**{'model.scan_layers': True}), 1).model)
    assert matrices('blocks.attn.q.kernel', 4) == ((1,), (2, 3))    # (layers, d_model, heads, head_dim)
    assert matrices('blocks.attn.o.kernel', 4) == ((1, 2), (3,))    # (layers, heads, head_dim, d_model)
    assert matrices('blocks.mlp.up.kernel', 3) == ((1,), (2,))
    assert matrices('blocks.0.mlp.down.kernel', 2) == ((0,), (1,))
    for other in ('embed.embedding', 'head.kernel', 'final_norm.scale', 'blocks.attn_norm.scale'):
        assert matrices(other, 2) is None
    for name in ('cnn', 'resnet', 'lstm', 'seq2seq'):  # none names its hidden matrices yet
        assert models.hidden_matrices(models.family(name).default_config()) is None


def test_muon_takes_the_mlps_hidden_kernels_and_adamw_the_rest(tmp_path):
    """One step from initialisation at lr 0.01 (no clipping, decay or momentum) of an MLP with
    three hidden layers of 8: the two kernels between hidden layers move by lr times an
    orthogonalised gradient (singular values in Newton-Schulz's band around 1), the input and
    output kernels by AdamW's first step, lr in every entry whose gradient is not zero."""
    cfg = small('mlp', **{'optim.name': 'muon', 'model.depth': 3, 'model.width': 8, 'optim.grad_clip': 0.0,
                          'optim.weight_decay': 0.0, 'optim.momentum': 0.0, 'train.steps': 1})
    the_plan = plan.make(cfg, 1)
    setup = train.setup(the_plan, parallel.make_mesh(the_plan.cfg.mesh, jax.devices()[:1]))
    initial = {naming.name(path): np.asarray(leaf) for path, leaf
               in jax.tree_util.tree_flatten_with_path(jax.jit(setup.init)()['params'])[0]}
    loop.run(cfg, tmp_path / 'mlp', devices=jax.devices()[:1])
    moved = {name: (np.asarray(p, np.float64) - initial[name]) / 0.01
             for name, p in weights.load_params_flat(tmp_path / 'mlp').items()}
    for name in ('dense.1.kernel', 'dense.2.kernel'):
        singular = np.linalg.svd(moved[name], compute_uv=False)  # zero where a unit is dead (ReLU)
        assert np.all((singular < 1e-6) | ((0.6 < singular) & (singular < 1.3))), (name, singular)
        assert np.sum(singular > 0.6) >= 4, (name, singular)
    for name in ('dense.0.kernel', 'dense.3.kernel'):  # Adam's first step: g / |g| (zero where a pixel is)
        size = np.abs(moved[name])
        assert np.all((size < 1e-3) | (np.abs(size - 1) < 1e-2)), name
        assert np.mean(np.abs(size - 1) < 1e-2) > 0.5, name


@pytest.mark.slow
def test_muon_under_mup_at_its_base_width_is_the_standard_run(tmp_path):
    """Muon's spectral scaling needs no muP learning-rate groups: at the base width muP's
    multipliers are all 1, so the two runs are one."""
    untied = {'model.tie_embeddings': False, 'model.d_ff': 0}
    base = {'model.parametrization': 'mup', 'model.mup_base_width': 32, **untied}
    loop.run(cfg_for('muon', 5, **base), tmp_path / 'mup', devices=jax.devices()[:1])
    loop.run(cfg_for('muon', 5, **untied), tmp_path / 'standard', devices=jax.devices()[:1])
    np.testing.assert_array_equal(losses(tmp_path / 'mup'), losses(tmp_path / 'standard'))


def test_muon_on_a_model_without_hidden_matrices_is_refused():
    cfg = small('mlp', **{'optim.name': 'muon', 'model.depth': 1})  # one hidden layer: no hidden-to-hidden kernel
    with pytest.raises(ConfigError, match="optim.name='muon': model.name='mlp' names no hidden matrices for Muon "
                                          'to orthogonalise; families that do: mlp, transformer'):
        config.resolve(cfg, 1)


@pytest.mark.slow
def test_schedule_free_evaluates_and_deploys_its_average(tmp_path):
    """The checkpoint's deployable parameters are x = (y - (1 - b1) z) / b1, by hand from its
    raw state; the run's own evaluation scored x, as a loaded model scores it, not y."""
    import orbax.checkpoint as ocp

    from scalelab import data
    from scalelab.use import evaluate, inference
    cfg = cfg_for('schedule_free_adamw', 8)
    summary = loop.run(cfg, tmp_path / 'sf', devices=jax.devices()[:1])
    raw = ocp.StandardCheckpointer().restore((tmp_path / 'sf' / 'checkpoints' / '8' / 'state').absolute())
    schedule_free = raw['opt_state'][1]  # after the clipping's empty state
    b1 = float(schedule_free['b1'])
    y, z = naming.flatten(raw['params']), naming.flatten(schedule_free['z'])
    deployed = weights.load_params_flat(tmp_path / 'sf')
    for key in y:
        np.testing.assert_allclose(deployed[key], (y[key] - (1 - b1) * z[key]) / b1, rtol=1e-6, atol=1e-7)
    assert not np.allclose(deployed['embed.embedding'], y['embed.embedding'])
    lm = inference.load(tmp_path / 'sf')
    source = data.load(plan.make(cfg, 1).cfg.data, cfg.train.global_batch, cfg.seed)
    batches = [source.eval_batch(i, slice(0, cfg.train.global_batch)) for i in range(source.eval_batches())]
    loss_sum, count = evaluate.score(lm, batches)
    assert loss_sum / count == pytest.approx(summary['eval_loss'], rel=1e-5)


def test_schedule_free_refuses_a_decaying_schedule_and_parameter_groups():
    with pytest.raises(ConfigError, match=r"optim.schedule='cosine': schedule_free_adamw replaces the decay"):
        config.resolve(tiny_lm(**{'optim.name': 'schedule_free_adamw'}), 1)
    with pytest.raises(ConfigError, match=r"optim.name='schedule_free_adamw' with train.freeze='\^embed': each "
                                          r'parameter group would average apart'):
        config.resolve(tiny_lm(**{'optim.name': 'schedule_free_adamw', 'optim.schedule': 'constant',
                                  'train.freeze': '^embed'}), 1)
