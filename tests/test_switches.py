"""Each performance switch reproduces the reference run: exactly where the math is
the same (scan, remat, accumulation, in float32), within a stated tolerance for bfloat16."""
import jax
import numpy as np
import pytest

from scalelab.core import parallel, weights
from scalelab.models import transformer
from scalelab.training import loop, plan, train
from tests.helpers import losses, lowered_train_step, tiny_lm


def run(tmp_path, name, devices=1, **overrides):
    # At lr 3e-3 reordered float sums stay below 2e-6 in the loss over 20 steps;
    # at 1e-2 Adam grows them to ~1e-4, hiding the difference between noise and bugs.
    cfg = tiny_lm(**{'model.n_layers': 3, 'optim.learning_rate': 3e-3, **overrides})
    if devices == 1:
        cfg.mesh.data = 1
    loop.run(cfg, tmp_path / name, devices=jax.devices()[:devices])
    return np.array(losses(tmp_path / name)), weights.load_params_flat(tmp_path / name)


def unstack(params: dict, n_layers: int) -> dict:
    """blocks.<leaf> of shape (L, ...) -> blocks.<i>.<leaf>: the looped layout."""
    out = {}
    for path, value in params.items():
        if path.startswith('blocks.'):
            for i in range(n_layers):
                out[path.replace('blocks.', f'blocks.{i}.', 1)] = value[i]
        else:
            out[path] = value
    return out


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    return run(tmp_path_factory.mktemp('ref'), 'ref')


def assert_same_run(result, reference, atol):
    (got_losses, got_params), (ref_losses, ref_params) = result, reference
    np.testing.assert_allclose(got_losses, ref_losses, atol=atol, rtol=0)
    assert got_params.keys() == ref_params.keys()
    for key in ref_params:
        np.testing.assert_allclose(got_params[key], ref_params[key], atol=10 * atol, rtol=0, err_msg=key)


def test_scan_over_layers_matches_the_loop(tmp_path, reference):
    got_losses, got_params = run(tmp_path, 'scan', **{'model.scan_layers': True})
    assert got_params['blocks.attn.q.kernel'].shape[0] == 3  # really stacked
    assert_same_run((got_losses, unstack(got_params, 3)), reference, atol=1e-5)


@pytest.mark.parametrize('policy', ['full', 'dots_saveable', 'dots_with_no_batch_dims_saveable'])
def test_remat_matches(tmp_path, reference, policy):
    assert_same_run(run(tmp_path, policy, **{'model.remat': policy}), reference, atol=1e-5)


def test_scan_with_remat_and_dropout_matches_the_loop(tmp_path):
    looped = run(tmp_path, 'loop', **{'model.dropout': 0.1})
    scanned_losses, scanned_params = run(tmp_path, 'scan', **{'model.dropout': 0.1, 'model.scan_layers': True,
                                                               'model.remat': 'full'})
    assert_same_run((scanned_losses, unstack(scanned_params, 3)), looped, atol=1e-5)
    assert not np.allclose(looped[0], run(tmp_path, 'nodrop')[0], atol=1e-3)  # dropout did act


def test_einsum_attention_matches_jax_dot_product_attention(tmp_path, reference):
    """The reference run uses `auto`, which is `einsum` on CPU; `xla` is jax.nn.dot_product_attention."""
    assert transformer.attention_impl('auto', 'float32') == 'einsum'
    assert_same_run(run(tmp_path, 'xla', **{'model.attention': 'xla'}), reference, atol=1e-5)


def test_gradient_accumulation_matches_the_large_batch(tmp_path, reference):
    assert_same_run(run(tmp_path, 'micro', **{'train.microbatches': 4}), reference, atol=1e-5)


def test_gradient_accumulation_on_a_sharded_mesh(tmp_path, reference):
    # 16 rows / 2 microbatches = 8 rows, split over data x fsdp = 4 devices
    sharded = tiny_lm(**{'model.n_layers': 3, 'optim.learning_rate': 3e-3, 'train.microbatches': 2,
                         'model.scan_layers': True})
    sharded.mesh.update(data=2, fsdp=2, tensor=2)
    loop.run(sharded, tmp_path / 'sharded')
    np.testing.assert_allclose(losses(tmp_path / 'sharded'), reference[0], atol=1e-5, rtol=0)


def test_bfloat16_compute_tracks_float32(tmp_path, reference):
    """bfloat16 activations with float32 parameters and optimizer state: losses
    within 2% of float32 over 20 steps (bf16 has 8 bits of mantissa)."""
    got_losses, got_params = run(tmp_path, 'bf16', **{'train.compute_dtype': 'bfloat16'})
    np.testing.assert_allclose(got_losses, reference[0], rtol=0.02)
    assert not np.array_equal(got_losses, reference[0])  # the switch changes the arithmetic: it is not ignored
    assert all(v.dtype == np.float32 for v in got_params.values())  # master weights stay float32


def test_bfloat16_compute_puts_the_matmuls_in_bfloat16():
    """The lowered step's dot products take bf16 operands with the switch, none without."""
    def dots(dtype):
        _, lowered = lowered_train_step(tiny_lm(**{'train.compute_dtype': dtype}))
        lines = [line for line in lowered.as_text().splitlines() if 'dot_general' in line]
        return [line for line in lines if 'bf16' in line.split('->')[0]], lines
    bf16, every = dots('bfloat16')
    assert every and len(bf16) >= len(every) // 2  # the model's matmuls (the loss's reductions may stay f32)
    assert dots('float32')[0] == []


def test_scanned_parameters_shard_with_a_replicated_layer_axis():
    cfg = tiny_lm(**{'model.scan_layers': True, 'model.n_heads': 8})
    cfg.mesh.update(data=2, fsdp=2, tensor=2)
    the_plan = plan.make(cfg, 8)
    prepared = train.setup(the_plan, parallel.make_mesh(the_plan.cfg.mesh))
    kernel = prepared.shardings['params']['blocks']['mlp']['up']['kernel']
    assert tuple(kernel.spec) == (None, 'fsdp', 'tensor')


def test_scan_keeps_the_program_size_flat_in_depth():
    """The compiled program of a scanned model does not grow with depth (the
    source of flat compile time); the looped one grows linearly."""
    def program_size(n_layers, scan):
        _, lowered = lowered_train_step(tiny_lm(**{'model.n_layers': n_layers, 'model.scan_layers': scan}))
        return len(lowered.as_text().splitlines())
    assert program_size(16, scan=True) < 1.1 * program_size(2, scan=True)
    assert program_size(16, scan=False) > 4 * program_size(2, scan=False)
