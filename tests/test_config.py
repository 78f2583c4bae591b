"""A bad config gets one clear error, naming key, value and what is valid, before any compile."""
import time

import pytest
from ml_collections import ConfigDict

from scalelab.core.errors import ConfigError
from scalelab.training import config, loop
from tests.helpers import run_cli, tiny_lm


def problems_of(cfg, num_devices=8):
    with pytest.raises(ConfigError) as info:
        config.resolve(cfg, num_devices)
    return '\n'.join(info.value.problems)


def unlocked(cfg):  # an experiment file may unlock its config and add keys
    cfg.unlock()
    return cfg


@pytest.mark.parametrize('mutate, expected', [
    (lambda c: unlocked(c).train.__setattr__('stpes', 5),
     r'train\.stpes: unknown key; did you mean train\.steps\?'),
    (lambda c: unlocked(c).__setattr__('optimiser', ConfigDict({'name': 'adam'})),
     r'optimiser: unknown key; did you mean optim\?'),
    (lambda c: c.mesh.update(data=2, fsdp=2, tensor=1),
     r'mesh: data=2 x fsdp=2 x tensor=1 multiply to 4, but there are 8 devices'),
    (lambda c: c.mesh.update(data=-1, fsdp=3, tensor=1),
     r'do not divide|does not divide the 8 devices'),
    (lambda c: c.mesh.update(data=-1, fsdp=-1, tensor=1),
     r'at most one axis may be -1'),
    (lambda c: c.train.update(global_batch=12),
     r'train\.global_batch=12: must be divisible by data x fsdp = 8; valid: multiples of 8'),
    (lambda c: c.train.update(global_batch=16, microbatches=4),
     r'train\.global_batch=16: .* times train\.microbatches=4; valid: multiples of 32'),
    (lambda c: c.data.update(path='/no/such/corpus'),
     r"data\.path='/no/such/corpus': no such file or directory"),
    (lambda c: c.train.update(steps=0),
     r'train\.steps=0: must be positive'),
    (lambda c: c.train.update(steps=-3),
     r'train\.steps=-3: must be positive'),
    (lambda c: c.optim.update(learning_rate=0.0),
     r'optim\.learning_rate=0\.0: must be positive'),
    (lambda c: c.optim.update(learning_rate=-1e-3),
     r'optim\.learning_rate=-0\.001: must be positive'),
    (lambda c: c.optim.update(name='lamb'),
     r"optim\.name='lamb': not one of sgd, momentum, adagrad, rmsprop, adam, adamw, lion, adafactor, muon"),
    (lambda c: c.optim.update(name='lion', momentum=0.8),
     r"optim\.momentum=0\.8: lion does not use it \(it reads b1, b2\); leave it at its default, 0\.9"),
    (lambda c: c.model.update(n_heads=5),
     r'model\.n_heads=5: must divide model\.d_model=32'),
    (lambda c: c.model.update(norm='batchnorm'),
     r"model\.norm='batchnorm': not one of 'rmsnorm', 'layernorm'"),
    (lambda c: c.train.update(compute_dtype='float16'),
     r"train\.compute_dtype='float16': not one of 'float32', 'bfloat16'"),
    (lambda c: c.model.update(name='gpt5'),
     r"model\.name='gpt5': unknown model family; valid: \['cnn', 'lstm', 'mlp', 'resnet', 'seq2seq', 'transformer'\]"),
])
def test_bad_config_names_key_value_and_valid_choices(mutate, expected):
    cfg = tiny_lm()
    mutate(cfg)
    assert pytest.raises(ConfigError, config.resolve, cfg, 8).match(expected)


@pytest.mark.parametrize('section, key, value, expected', [
    ('train', 'global_batch', '16', r"train\.global_batch='16': expected int, got str"),
    ('optim', 'learning_rate', 'fast', r"optim\.learning_rate='fast': expected float, got str"),
    ('model', 'tie_embeddings', 1, r'model\.tie_embeddings=1: expected bool, got int'),
    ('mesh', 'data', 2.0, r'mesh\.data=2\.0: expected int, got float'),
])
def test_wrong_type_in_a_config_built_from_a_dict(section, key, value, expected):
    """ml_collections refuses wrong types on assignment; a config built from a
    plain dict has no field types, so validation checks them."""
    raw = tiny_lm().to_dict()
    raw[section][key] = value
    assert pytest.raises(ConfigError, config.resolve, ConfigDict(raw), 8).match(expected)


def test_all_problems_are_reported_together():
    cfg = tiny_lm(**{'train.steps': 0, 'optim.learning_rate': -1.0})
    text = problems_of(cfg)
    assert 'train.steps=0' in text and 'optim.learning_rate=-1.0' in text


def test_duration_in_tokens_or_flops_derives_steps():
    tokens = config.resolve(tiny_lm(**{'train.tokens': 5120.0}), 8)
    assert tokens.train.steps == 5120 // (16 * 32)
    # a budget is C = 6 N D (flops.FLOP_CONVENTION): N = 2 layers x (2 norms + q, k, v, o + MLP) + the final
    # norm + the head (32 x 256); D = 16 x 32 tokens a step
    n = 2 * (2 * 32 + 4 * 32 * 32 + 2 * 32 * 64) + 32 + 32 * 256
    per_step = 6 * n * 16 * 32
    by_flops = config.resolve(tiny_lm(**{'train.flops': 7 * per_step}), 8)
    assert by_flops.train.steps == 7
    assert 'give the duration one way only' in problems_of(tiny_lm(**{'train.tokens': 1.0, 'train.flops': 1.0}))


def test_defaults_are_filled_and_derived(tmp_path):
    cfg = tiny_lm(**{'model.d_ff': 0})
    resolved = config.resolve(cfg, 8)
    assert resolved.model.d_ff == 4 * 32
    assert dict(resolved.mesh) == {'data': 8, 'fsdp': 1, 'tensor': 1}


def test_missing_corpus_fails_before_compiling(tmp_path):
    (tmp_path / 'only.py').write_text('x = 1\n')
    cfg = tiny_lm(**{'data.path': str(tmp_path)})
    with pytest.raises(ConfigError, match=r'found 1 file\(s\); a train/eval split by file needs at least 2'):
        loop.run(cfg, tmp_path / 'run')
    assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_cli_prints_one_clear_error_and_exits_2(tmp_path):
    start = time.monotonic()
    result = run_cli(['--config', 'tests/tiny_config.py', f'--workdir={tmp_path}', '--cpu_devices=8',
                      '--config.train.steps=-5', '--config.mesh.data=2', '--config.mesh.fsdp=2'])
    assert result.returncode == 2
    assert 'train.steps=-5: must be positive' in result.stderr
    assert 'multiply to 4, but there are 8 devices' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'config.json').exists()  # failed before anything was written or compiled
    print(f'CLI error path took {time.monotonic() - start:.1f}s')


@pytest.mark.parametrize('override, named', [
    ('--config.train.stpes=5', 'stpes'),
    ('--config.train.global_batch=abc', 'global_batch'),
])
def test_cli_rejects_bad_override(tmp_path, override, named):
    """config_flags rejects unknown keys and unparsable values itself, naming them."""
    result = run_cli(['--config', 'tests/tiny_config.py', f'--workdir={tmp_path}', override])
    assert result.returncode != 0
    assert named in result.stderr
    assert not (tmp_path / 'config.json').exists()
