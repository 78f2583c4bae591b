"""safetensors import/export, and fine-tuning from another run's parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scalelab import data
from scalelab.core import parallel, tasks, weights
from scalelab.core.errors import ConfigError
from scalelab.data import text
from scalelab.training import loop, plan, train
from scalelab.use import export
from tests.helpers import losses, tiny_lm

OTHER_CORPUS = str(text.stdlib_dir() / 'tomllib')  # a different corpus for fine-tuning


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('source')
    loop.run(tiny_lm(**{'train.steps': 15}), workdir)
    return workdir


def test_safetensors_round_trip_is_exact(tmp_path, source):
    params = weights.load_params_flat(source)
    path = tmp_path / 'model.safetensors'
    weights.save(path, params, {'name': 'transformer', 'd_model': 32})
    loaded, model_cfg = weights.load(path)
    assert model_cfg == {'name': 'transformer', 'd_model': 32}
    assert loaded.keys() == params.keys()
    for name_, value in params.items():
        assert loaded[name_].dtype == value.dtype
        np.testing.assert_array_equal(loaded[name_], value)
    assert 'blocks.0.attn.q.kernel' in loaded and loaded['blocks.0.attn.q.kernel'].shape == (32, 4, 8)


def finetune_cfg(**overrides):
    return tiny_lm(**{'data.path': OTHER_CORPUS, 'train.steps': 4, 'optim.warmup_steps': 0, **overrides})


def test_finetuning_starts_from_exactly_the_source_parameters(tmp_path, source):
    cfg = finetune_cfg(**{'train.init_from': str(source)})
    loop.run(cfg, tmp_path)
    # The source model's loss on the fine-tuning run's first batch, computed independently.
    the_plan = plan.make(cfg, jax.device_count())
    resolved = the_plan.cfg
    prepared = train.setup(the_plan, parallel.make_mesh(resolved.mesh))
    params = weights.arrange(weights.load_params_flat(source), prepared.abstract_state['params'])
    batch = data.load(resolved.data, 16, resolved.seed).train_batch(0, slice(0, 16))
    logits = nnx.merge(prepared.spec.graphdef, params)(jnp.asarray(batch['inputs']))
    expected = float(tasks.loss('lm', logits, {k: jnp.asarray(v) for k, v in batch.items()}))
    assert losses(tmp_path)[0] == pytest.approx(expected, abs=1e-5)
    fresh = finetune_cfg()
    loop.run(fresh, tmp_path / 'scratch')
    assert losses(tmp_path / 'scratch')[0] > losses(tmp_path)[0] + 0.5  # a fresh model is far worse


def test_finetuning_from_a_safetensors_file_with_frozen_layers(tmp_path, source):
    path = tmp_path / 'source.safetensors'
    assert export.main(['--workdir', str(source), '--out', str(path)]) == 0
    loop.run(finetune_cfg(**{'train.init_from': str(path), 'train.freeze': r'^(embed|blocks\.0)\.'}), tmp_path / 'ft')
    before, after = weights.load(path)[0], weights.load_params_flat(tmp_path / 'ft')
    for name_ in before:
        frozen = name_.startswith(('embed.', 'blocks.0.'))
        assert np.array_equal(before[name_], after[name_]) == frozen, name_


def test_a_source_of_another_shape_is_refused(tmp_path, source):
    with pytest.raises(ConfigError, match=r"train.init_from=.*parameters do not fit the model: .*shape "
                                          r"blocks.0.attn.k.kernel \(32, 4, 8\) \(model: \(64, 4, 16\)\)"):
        loop.run(finetune_cfg(**{'train.init_from': str(source), 'model.d_model': 64}), tmp_path)
