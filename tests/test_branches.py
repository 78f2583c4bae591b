"""Decay branches: a branch from a constant-rate trunk equals one uninterrupted WSD run of its
length, step for step; it counts its trunk's tokens; it resumes from its own checkpoints;
and the branches a trunk cannot give are refused, each naming why."""
import json
import shutil

import jax
import numpy as np
import pytest

from scalelab.core import weights
from scalelab.core.errors import ConfigError
from scalelab.sweep import points
from scalelab.training import config, loop
from tests.helpers import losses, tiny_lm

ONE = jax.devices()[:1]
COMMON = {'optim.warmup_steps': 2, 'checkpoint.every_steps': 4, 'checkpoint.keep': 10, 'train.log_every': 1}


def trunk_cfg(steps=16, **overrides):
    return tiny_lm(**{**COMMON, 'optim.schedule': 'constant', 'train.steps': steps, **overrides})


def branch_cfg(trunk, start, steps, **overrides):
    return tiny_lm(**{**COMMON, 'optim.schedule': 'wsd', 'optim.min_lr_ratio': 0.0, 'train.steps': steps,
                      'train.decay_from': str(trunk), 'train.decay_start': start, **overrides})


@pytest.fixture(scope='module')
def trunk(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('trunk')
    loop.run(trunk_cfg(), workdir, devices=ONE)
    return workdir


@pytest.mark.slow
def test_a_branch_is_one_wsd_run_of_its_length(tmp_path, trunk):
    """From step 8 of the trunk, decaying over 6 steps to step 14 (its end derived: train.steps=0,
    optim.decay_steps=6), against one WSD run of 14 steps whose decay is the same 6: the same
    losses and parameters, to the bit."""
    summary = loop.run(branch_cfg(trunk, 8, 0, **{'optim.decay_steps': 6}), tmp_path / 'branch', devices=ONE)
    once = tiny_lm(**{**COMMON, 'optim.schedule': 'wsd', 'optim.min_lr_ratio': 0.0, 'optim.decay_steps': 6,
                      'train.steps': 14})
    loop.run(once, tmp_path / 'once', devices=ONE)
    logged = [json.loads(line) for line in (tmp_path / 'branch' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in logged if 'loss' in r] == list(range(9, 15))  # the branch logs its own steps
    np.testing.assert_array_equal(losses(tmp_path / 'branch'), losses(tmp_path / 'once')[8:])
    jax.tree.map(np.testing.assert_array_equal, weights.load_params_flat(tmp_path / 'branch'),
                 weights.load_params_flat(tmp_path / 'once'))
    lrs = [r['lr'] for r in logged if 'lr' in r]  # the peak until step 8, then linear to 0 at step 14
    np.testing.assert_allclose(lrs, [0.01 * (1 - k / 6) for k in range(6)], rtol=1e-6)
    once_summary = json.loads((tmp_path / 'once' / 'summary.json').read_text())
    assert summary['tokens'] == once_summary['tokens'] and summary['step'] == 14  # the trunk's tokens counted


@pytest.mark.slow
def test_a_branch_resumes_from_its_own_checkpoint(tmp_path, trunk):
    workdir = tmp_path / 'branch'
    loop.run(branch_cfg(trunk, 4, 14), workdir, devices=ONE)
    reference = weights.load_params_flat(workdir)
    for stale in ('summary.json',):  # as if killed after its step-12 checkpoint
        (workdir / stale).unlink()
    shutil.rmtree(workdir / 'checkpoints' / '14')
    lines = (workdir / 'metrics.jsonl').read_text().splitlines()
    (workdir / 'metrics.jsonl').write_text('\n'.join(line for line in lines if json.loads(line)['step'] <= 12) + '\n')
    summary = loop.run(branch_cfg(trunk, 4, 14), workdir, devices=ONE)
    assert summary['step'] == 14
    jax.tree.map(np.testing.assert_array_equal, weights.load_params_flat(workdir), reference)


@pytest.mark.parametrize('make, message', [
    (lambda trunk, tmp: branch_cfg(trunk, 6, 14), r'train.decay_start=6: not one of the trunk\'s checkpoints '
                                                  r'\(steps 1, 4, 8, 12, 16\); keep more with checkpoint.keep'),
    (lambda trunk, tmp: branch_cfg(trunk, 20, 24), r"train.decay_start=20: past the trunk's end \(step 16\)"),
    (lambda trunk, tmp: branch_cfg(trunk, 8, 8), r"train.decay_start=8: at or past the branch's end, "
                                                 r'train.steps=8'),
    (lambda trunk, tmp: branch_cfg(trunk, 8, 14, **{'optim.schedule': 'cosine'}),
     r"train.decay_from=.*: a branch decays; set optim.schedule='wsd' \(got 'cosine'\)"),
    (lambda trunk, tmp: branch_cfg(trunk, 8, 14, **{'optim.learning_rate': 3e-3}),
     r"the trunk was trained otherwise: optim.learning_rate: saved 0.01, now 0.003"),
    (lambda trunk, tmp: branch_cfg(tmp, 8, 14), r"config.json: no such file; train.decay_from must be a run's workdir"),
])
def test_branches_a_trunk_cannot_give_are_refused(tmp_path, trunk, make, message):
    with pytest.raises(ConfigError, match=message):
        loop.run(make(trunk, tmp_path), tmp_path / 'branch', devices=ONE)


def test_a_trunk_with_a_decaying_schedule_is_refused(tmp_path):
    loop.run(tiny_lm(**{**COMMON, 'train.steps': 4}), tmp_path / 'cosine', devices=ONE)  # cosine by default
    with pytest.raises(ConfigError, match=r"its optim.schedule is 'cosine'; a branch starts from a constant "
                                          r'learning rate'):
        loop.run(branch_cfg(tmp_path / 'cosine', 4, 8), tmp_path / 'branch', devices=ONE)


def test_a_sweep_over_the_start_makes_each_branch_a_point(tmp_path):
    """train.steps=0: a branch ends at decay_start / (1 - optim.decay_fraction), so one axis over
    train.decay_start gives points whose steps and tokens (the trunk's counted) a hand count gives."""
    sweep = points.default_config()
    sweep.base = 'experiments/lm_stdlib.py:tiny'
    sweep.overrides.update({'train.decay_from': str(tmp_path / 'trunk'), 'train.steps': 0,
                            'optim.schedule': 'wsd', 'optim.decay_fraction': 0.2})
    sweep.axes['train.decay_start'] = (400, 800, 1000)
    expanded = points.expand(sweep, 1)
    assert [(p.plan.steps, p.config.optim.decay_steps) for p in expanded] == [(500, 100), (1000, 200), (1250, 250)]
    assert [p.plan.steps * p.plan.tokens_per_step for p in expanded] == [500 * 16 * 64, 1000 * 16 * 64,
                                                                        1250 * 16 * 64]


def test_a_derived_end_needs_a_decay_share_below_one(tmp_path):
    cfg = branch_cfg(tmp_path, 8, 0, **{'optim.decay_fraction': 1.0})
    with pytest.raises(ConfigError, match=r'optim.decay_fraction=1.0: a branch with train.steps=0 ends at '
                                          r'train.decay_start / \(1 - optim.decay_fraction\), which needs it in '
                                          r'\(0, 1\); or give optim.decay_steps or train.steps'):
        config.resolve(cfg, 1)
