"""Kill at any moment and start again: same final parameters as an uninterrupted run."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from scalelab.core import checkpoint, naming, parallel, weights
from scalelab.training import loop, plan, train
from tests.helpers import REPO, TEST_CACHE, losses, run_cli, tiny_lm

pytestmark = pytest.mark.slow
STEPS = 160
CLI = ['--config', 'tests/tiny_config.py', f'--config.train.steps={STEPS}', '--config.checkpoint.async_save=True',
       '--config.checkpoint.every_steps=20', '--cpu_devices=8']


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('reference')
    cfg = tiny_lm(**{'train.steps': STEPS, 'checkpoint.async_save': True, 'checkpoint.every_steps': 20})
    loop.run(cfg, workdir)
    return workdir


def start_and_wait(workdir, min_steps):
    """Start a CLI run and return it once metrics.jsonl shows `min_steps` steps."""
    proc = subprocess.Popen([sys.executable, '-m', 'scalelab.run', *CLI, f'--workdir={workdir}'],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)})
    metrics = workdir / 'metrics.jsonl'
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= min_steps:
            return proc
        if proc.poll() is not None:
            pytest.fail(f'run ended before step {min_steps}:\n{proc.stdout.read()}')
        time.sleep(0.02)
    proc.kill()
    pytest.fail('run did not reach step {min_steps} in time')


def test_sigkill_then_rerun_matches_uninterrupted_run(tmp_path, reference):
    workdir = tmp_path / 'run'
    proc = start_and_wait(workdir, min_steps=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (workdir / 'summary.json').exists(), 'the run finished before it was killed'
    done = len(losses(workdir))
    assert done < STEPS

    result = run_cli([*CLI, f'--workdir={workdir}'], timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'resumed from step' in result.stdout
    assert json.loads((workdir / 'summary.json').read_text())['status'] == 'completed'
    jax.tree.map(np.testing.assert_array_equal, weights.load_params_flat(workdir), weights.load_params_flat(reference))
    # metrics.jsonl reads as one uninterrupted run: every step once, same losses
    np.testing.assert_array_equal(losses(workdir), losses(reference))


def test_sigterm_checkpoints_and_exits_cleanly(tmp_path, reference):
    workdir = tmp_path / 'run'
    proc = start_and_wait(workdir, min_steps=20)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    summary = json.loads((workdir / 'summary.json').read_text())
    assert summary['status'] == 'preempted' and 20 <= summary['step'] < STEPS
    assert (workdir / 'checkpoints' / str(summary['step'])).is_dir()

    result = run_cli([*CLI, f'--workdir={workdir}'], timeout=300)
    assert result.returncode == 0, result.stderr
    assert f'resumed from step {summary["step"]}' in result.stdout
    jax.tree.map(np.testing.assert_array_equal, weights.load_params_flat(workdir), weights.load_params_flat(reference))


def test_checkpoint_from_one_mesh_resumes_on_another(tmp_path):
    """10 steps on (2,2,2), restored onto (1,1,8) exactly, then 10 more steps
    there match 20 uninterrupted steps on (8,1,1)."""
    def cfg(steps, mesh):
        c = tiny_lm(**{'train.steps': steps, 'optim.schedule': 'constant', 'model.n_heads': 8})
        c.mesh.update(data=mesh[0], fsdp=mesh[1], tensor=mesh[2])
        return c

    loop.run(cfg(10, (2, 2, 2)), tmp_path / 'moved')
    saved = weights.load_params_flat(tmp_path / 'moved')
    restored = restore_on_mesh(cfg(10, (1, 1, 8)), tmp_path / 'moved')
    kernel = restored['params']['blocks'][0]['mlp']['up']['kernel']
    assert kernel.sharding.mesh.axis_sizes == (1, 1, 8) and tuple(kernel.sharding.spec) == (None, 'tensor')
    jax.tree.map(np.testing.assert_array_equal, naming.flatten(restored['params']), saved)

    loop.run(cfg(20, (8, 1, 1)), tmp_path / 'reference')
    summary = loop.run(cfg(20, (1, 1, 8)), tmp_path / 'moved')
    assert summary['topology']['mesh'] == {'data': 1, 'fsdp': 1, 'tensor': 8}
    np.testing.assert_allclose(losses(tmp_path / 'moved'), losses(tmp_path / 'reference'), atol=1e-5, rtol=0)
    # Reduction order differs between meshes; Adam's m/sqrt(v) turns that noise into
    # parameter differences of a small fraction of one step (lr = 1e-2).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=0),
                 weights.load_params_flat(tmp_path / 'moved'), weights.load_params_flat(tmp_path / 'reference'))


def restore_on_mesh(cfg, workdir):
    the_plan = plan.make(cfg, jax.device_count())
    cfg = the_plan.cfg
    prepared = train.setup(the_plan, parallel.make_mesh(cfg.mesh))
    ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', every_steps=1, keep=1, async_save=False)
    target = checkpoint.abstract_target(prepared.abstract_state, prepared.shardings)
    state, record = ckpt.restore(ckpt.latest_step(), target)
    ckpt.close()
    assert record['topology']['mesh'] == {'data': 2, 'fsdp': 2, 'tensor': 2}  # where it was saved
    return state


def test_resume_refuses_a_different_model(tmp_path):
    loop.run(tiny_lm(**{'train.steps': 2}), tmp_path)
    with pytest.raises(ValueError, match=r'would change: model.d_ff: saved 64, now 128; model.d_model: saved 32, '
                                         r'now 64\. Use a new --workdir') as info:
        loop.run(tiny_lm(**{'train.steps': 2, 'model.d_model': 64, 'model.d_ff': 128}), tmp_path)
    assert len(str(info.value)) < 600  # the keys that differ, not both model sections


@pytest.mark.parametrize('overrides, named', [
    ({'optim.learning_rate': 3e-2}, 'optim.learning_rate: saved 0.01, now 0.03'),
    ({'train.global_batch': 32}, 'train.global_batch: saved 16, now 32'),
    ({'optim.schedule': 'constant'}, "optim.schedule: saved 'cosine', now 'constant'"),
    ({'train.steps': 8}, 'train.steps: saved 4, now 8'),  # a cosine schedule's length is part of it
    ({'data.eval_tokens': 2048}, 'data.eval_tokens: saved 1024, now 2048'),
])
def test_resume_refuses_what_would_change_the_trajectory(tmp_path, overrides, named):
    loop.run(tiny_lm(**{'train.steps': 4}), tmp_path)
    with pytest.raises(ValueError, match=re.escape(named)):
        loop.run(tiny_lm(**{'train.steps': 4, **overrides}), tmp_path)


def test_resume_allows_cadence_changes_and_a_longer_constant_schedule(tmp_path):
    constant = {'optim.schedule': 'constant', 'train.steps': 4}
    loop.run(tiny_lm(**constant), tmp_path)
    summary = loop.run(tiny_lm(**{**constant, 'train.steps': 6, 'train.log_every': 2, 'train.eval_every': 3,
                                  'checkpoint.every_steps': 2, 'checkpoint.keep': 1}), tmp_path)
    assert summary['status'] == 'completed' and summary['step'] == 6
    assert loop.resume_conflicts({'optim': {'schedule': 'constant', 'warmup_steps': 10}, 'train': {'steps': 4}},
                                 {'optim': {'schedule': 'constant', 'warmup_steps': 10}, 'train': {'steps': 20}}) \
        == ['train.steps: saved 4, now 20']  # still inside the warmup: the ramp would change


def test_a_run_saved_before_a_key_existed_resumes_under_its_default():
    """A key added since a run was saved is compared at its default: the run ran that way."""
    now = tiny_lm().to_dict()
    before = {**now, 'train': {k: v for k, v in now['train'].items() if k not in ('decay_from', 'decay_start')},
              'optim': {k: v for k, v in now['optim'].items() if k != 'decay_steps'},
              'log': {k: v for k, v in now['log'].items() if k != 'noise_scale'}}
    assert loop.resume_conflicts(before, now) == []
    changed = tiny_lm(**{'optim.decay_steps': 5}).to_dict()  # away from the default: a change
    assert loop.resume_conflicts(before, changed) == ["optim.decay_steps: saved 0, now 5"]
