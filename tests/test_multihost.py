"""Several processes on loopback, as on a pod: same results as one process, resume,
preemption, a dying peer, and the launch scripts' command lines."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from scalelab.core import weights
from scalelab.training import launch_local, loop
from tests.helpers import REPO, TEST_CACHE, losses, tiny_lm

pytestmark = pytest.mark.slow
ENV = {**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE), 'PYTHONUNBUFFERED': '1'}
RUN = [sys.executable, '-m', 'scalelab.run', '--config', 'tests/tiny_config.py', '--config.checkpoint.every_steps=5']


def launch(workdir, *args, processes=2, devices=4, timeout=240):
    """`python -m scalelab.launch_local` as a user would type it."""
    return subprocess.run([sys.executable, '-m', 'scalelab.launch_local', f'--processes={processes}',
                           f'--devices-per-process={devices}', '--', *RUN, f'--workdir={workdir}', *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def start_processes(workdir, *args, processes=2, devices=4):
    """The processes of one run, started directly so each can be signalled alone."""
    coordinator = f'127.0.0.1:{launch_local.free_port()}'
    return [subprocess.Popen([*RUN, f'--workdir={workdir}', f'--cpu_devices={devices}', f'--coordinator={coordinator}',
                              f'--num_processes={processes}', f'--process_id={i}', *args],
                             cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(processes)]


def wait_for_steps(workdir, n, procs, timeout=180):
    deadline = time.monotonic() + timeout
    path = workdir / 'metrics.jsonl'
    while not (path.exists() and len(path.read_text().splitlines()) >= n):
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
        assert time.monotonic() < deadline, f'no step {n} in time'
        time.sleep(0.05)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """One process, 8 devices, 20 steps."""
    workdir = tmp_path_factory.mktemp('one_process')
    loop.run(tiny_lm(**{'train.steps': 20, 'checkpoint.every_steps': 5}), workdir)
    return workdir


def test_two_processes_match_one_process(tmp_path, reference):
    done = launch(tmp_path, '--config.train.steps=20')
    assert done.returncode == 0, done.stdout[-4000:]
    assert '[p0] step 20/20' in done.stdout and 'peer ranks' not in done.stdout  # Gloo's connection lines dropped
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['topology']['num_processes'] == 2 and summary['topology']['num_devices'] == 8
    np.testing.assert_allclose(losses(tmp_path), losses(reference), atol=1e-5, rtol=0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0),
                 weights.load_params_flat(tmp_path), weights.load_params_flat(reference))


def test_two_process_run_killed_resumes_and_restores_in_one_process(tmp_path, reference):
    procs = start_processes(tmp_path, '--config.train.steps=20', '--config.train.log_every=1')
    wait_for_steps(tmp_path, 12, procs)
    for p in procs:
        p.kill()
        p.wait()
    assert not (tmp_path / 'summary.json').exists()
    one = tmp_path.with_name(tmp_path.name + '_one')
    shutil.copytree(tmp_path, one)  # the killed 2-process workdir, to resume in one process below
    done = launch(tmp_path, '--config.train.steps=20')
    assert done.returncode == 0, done.stdout[-4000:]
    assert 'resumed from step' in done.stdout
    np.testing.assert_allclose(losses(tmp_path), losses(reference), atol=1e-5, rtol=0)
    # the killed 2-process run's checkpoint, restored onto one process's 8 devices, trains on to the same losses
    summary = loop.run(tiny_lm(**{'train.steps': 20, 'checkpoint.every_steps': 5}), one)
    assert summary['step'] == 20 and summary['topology']['num_processes'] == 1
    np.testing.assert_allclose(losses(one), losses(reference), atol=1e-5, rtol=0)


def test_sigterm_to_one_process_checkpoints_and_stops_both(tmp_path):
    procs = start_processes(tmp_path, '--config.train.steps=2000', '--config.train.log_every=1')
    wait_for_steps(tmp_path, 8, procs)
    procs[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outputs]
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['status'] == 'preempted' and 8 <= summary['step'] < 2000
    assert (tmp_path / 'checkpoints' / str(summary['step'])).is_dir()


def test_a_dead_peer_stops_the_others_within_the_heartbeat(tmp_path):
    procs = start_processes(tmp_path, '--config.train.steps=100000', '--config.train.log_every=1',
                            '--heartbeat_timeout=5')
    wait_for_steps(tmp_path, 4, procs)
    procs[1].kill()
    output = procs[0].communicate(timeout=120)[0]  # a survivor that waited on forever would time out here
    assert procs[0].returncode != 0, output[-6000:]
    assert 'another task died' in output  # JAX's own explanation of the abort


def test_launch_local_stops_everyone_when_one_process_fails(tmp_path):
    """Process 0 sleeps 600 s: only launch_local's stopping it lets the command end inside its timeout."""
    done = subprocess.run([sys.executable, '-m', 'scalelab.launch_local', '--processes=2', '--grace=5', '--',
                           sys.executable, '-c',
                           'import os, sys, time; pid = int(os.environ["SCALELAB_PROCESS_ID"]); '
                           'print("worker", pid, os.environ["JAX_NUM_CPU_DEVICES"], flush=True); '
                           'sys.exit(3) if pid == 1 else time.sleep(600)'],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert '[p1] worker 1 1' in done.stdout and '[p0] worker 0 1' in done.stdout
    assert '[launch_local] process 1 exited with code 3; stopping the others' in done.stdout
