"""launch/slurm.sh on a real one-node SLURM cluster: a run of two tasks that find each other
from SLURM's environment alone, cancelled and resubmitted to one process's result; a second
job refused by the workdir lock; a sweep as an array job collected into one table; and the
errors a user reads in the logs the script names."""
import json
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from scalelab.core import weights
from scalelab.training import loop
from tests import slurm_cluster
from tests.helpers import REPO, losses, tiny_lm

pytestmark = [pytest.mark.slow,  # each xdist worker that runs these starts its own cluster
              pytest.mark.skipif(slurm_cluster.missing() is not None, reason=str(slurm_cluster.missing()))]
STEPS = 60
RUN = ['python', '-m', 'scalelab.run', '--config', 'tests/tiny_config.py', '--cpu-devices=4',
       f'--config.train.steps={STEPS}', '--config.train.log_every=1']


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    started = slurm_cluster.Cluster(tmp_path_factory.mktemp('slurm')).start()
    yield started
    started.stop()


def slurm_sh(cluster, *args):
    return subprocess.run([str(REPO / 'launch' / 'slurm.sh'), *args], cwd=REPO, env=cluster.env,
                          capture_output=True, text=True, timeout=60)


def submit(cluster, logs, *command, tasks=2):
    done = slurm_sh(cluster, 'submit', '--nodes', '1', '--ntasks-per-node', str(tasks), '--logs', str(logs),
                    '--', *command)
    assert done.returncode == 0, done.stderr
    job = slurm_cluster.submitted_job(done.stdout)
    assert f'logs: {logs}/scalelab-{job}-task<N>.out, one per task' in done.stdout
    return job


def task_log(logs, job, task):
    return (logs / f'scalelab-{job}-task{task}.out').read_text()


def wait_for_steps(cluster, workdir, job, n, timeout_s=240):
    path = workdir / 'metrics.jsonl'
    cluster._wait(lambda: path.exists() and len(path.read_text().splitlines()) >= n or not cluster.queued(job),
                  timeout_s, f'no step {n} in {workdir}')
    assert cluster.queued(job), f'job {job} ended before step {n}'


def test_cancel_and_resubmit_two_tasks_match_one_process(cluster, tmp_path):
    reference = tmp_path / 'one_process'
    loop.run(tiny_lm(**{'train.steps': STEPS}), reference)
    workdir, logs = tmp_path / 'run', tmp_path / 'logs'
    first = submit(cluster, logs, *RUN, f'--workdir={workdir}')
    wait_for_steps(cluster, workdir, first, 8)
    assert cluster.run('scontrol', 'suspend', first).returncode == 0  # its processes stop, holding the workdir

    # the same workdir, while the first holds it (one task: a second would wait out gloo's 30 s for its peer)
    second = submit(cluster, logs, *RUN, f'--workdir={workdir}', tasks=1)
    record = cluster.wait_done(second)
    assert record['JobState'] == 'FAILED', record
    assert f'--workdir {workdir}: in use by pid' in task_log(logs, second, 0)
    assert not (workdir / 'exit.json').exists()  # the refused run wrote nothing into the holder's workdir

    # a suspended job cancelled is killed outright: resumed and stepping again, its tasks get SIGTERM
    logged = len((workdir / 'metrics.jsonl').read_text().splitlines())
    assert cluster.run('scontrol', 'resume', first).returncode == 0
    wait_for_steps(cluster, workdir, first, logged + 1)
    assert cluster.run('scancel', first).returncode == 0
    cluster.wait_done(first)
    summary = json.loads((workdir / 'summary.json').read_text())
    assert summary['status'] == 'preempted' and 8 <= summary['step'] < STEPS, summary
    assert (workdir / 'checkpoints' / str(summary['step'])).is_dir()
    assert 'stop requested: checkpointing' in task_log(logs, first, 0)

    third = submit(cluster, logs, *RUN, f'--workdir={workdir}')
    assert cluster.wait_done(third)['JobState'] == 'COMPLETED'
    assert f'resumed from step {summary["step"]}' in task_log(logs, third, 0)
    summary = json.loads((workdir / 'summary.json').read_text())
    assert summary['status'] == 'completed' and summary['step'] == STEPS
    assert summary['topology']['num_processes'] == 2 and summary['topology']['num_devices'] == 8
    # gloo's sums over two processes and XLA's over 8 local devices differ in the last bit, which 60
    # steps at lr 1e-2 grow in the parameters to 1.2e-3 or 6.8e-3, by trajectory (measured: RoPE's
    # tables rounded one ulp differently moved it from the one to the other); a step skipped at the
    # resume moves the losses by 0.38 (planted), which the loss checks catch
    np.testing.assert_allclose(losses(workdir)[:20], losses(reference)[:20], atol=1e-5, rtol=0)
    np.testing.assert_allclose(losses(workdir), losses(reference), atol=2e-3, rtol=0)
    gaps = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                        weights.load_params_flat(workdir), weights.load_params_flat(reference))
    print('largest parameter gap', max(jax.tree.leaves(gaps)))
    assert max(jax.tree.leaves(gaps)) < 1.5e-2, gaps


def test_a_sweep_as_an_array_job_is_collected_into_one_table(cluster, tmp_path):
    def sweep(*args):
        return subprocess.run([sys.executable, '-m', 'scalelab.sweep', '--config', 'experiments/sweep_lm_params.py:tiny',
                               f'--workdir={tmp_path / "sweep"}', *args], cwd=REPO, env=cluster.env,
                              capture_output=True, text=True, timeout=300)

    emitted = sweep('--emit-commands')
    assert emitted.returncode == 0, emitted.stderr
    lines = emitted.stdout.strip().splitlines()
    assert len(lines) == 3
    lines[2] += ' --config.optim.learning_rate=-1'  # the last point fails: its exit code must reach the table
    commands = tmp_path / 'points.txt'
    commands.write_text('\n'.join(lines) + '\n')
    done = slurm_sh(cluster, 'array', '--commands', str(commands), '--max-parallel', '2', '--logs',
                    str(tmp_path / 'logs'))
    assert done.returncode == 0, done.stderr
    job = slurm_cluster.submitted_job(done.stdout)
    cluster.wait_done(job)
    names = [next(Path(a.split('=', 1)[1]).name for a in shlex.split(line) if a.startswith('--workdir='))
             for line in lines]
    for i, name in enumerate(names):
        assert name in (tmp_path / 'logs' / f'scalelab-sweep-{job}_{i}.out').read_text()  # the line it ran

    collected = sweep('--collect-only')  # trains nothing: the table as the array left it
    assert collected.returncode == 1 and 'start ' not in collected.stdout
    rows = {row['name']: row for row in csv_rows(tmp_path / 'sweep' / 'results.csv')}
    assert [rows[n]['status'] for n in names] == ['completed', 'completed', 'failed (exit 2)']
    assert 'optim.learning_rate' in rows[names[2]]['error'] and not rows[names[0]]['error']

    rerun = sweep()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [line.split(':')[0] for line in rerun.stdout.splitlines() if line.startswith(('skip', 'start'))] == \
        [f'skip {names[0]}', f'skip {names[1]}', f'start {names[2]}']
    rows = csv_rows(tmp_path / 'sweep' / 'results.csv')
    assert [row['status'] for row in rows] == ['completed'] * 3 and not any(row['error'] for row in rows)
    assert json.loads((tmp_path / 'sweep' / 'fit.json').read_text())['law'] == 'power'


def csv_rows(path):
    from scalelab.sweep import results
    return results.read_csv(path)


def test_errors_reach_the_user_in_one_line_or_in_the_first_tasks_log(cluster, tmp_path):
    done = slurm_sh(cluster, 'submit', '--nodes', '1', '--partition', 'nope', '--', 'true')
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.count('\n') == 1 and done.stderr.startswith('error: invalid partition specified: nope'), \
        done.stderr
    logs = tmp_path / 'logs'
    job = submit(cluster, logs, *RUN[:5], '--cpu-devices=3', f'--workdir={tmp_path / "run"}')  # 2 x 3 devices
    record = cluster.wait_done(job)
    assert record['JobState'] == 'FAILED', record
    first = task_log(logs, job, 0)
    assert 'error: ' in first and 'train.global_batch=16: must be divisible by data x fsdp = 6' in first, first[-2000:]


def test_the_cluster_runs_tasks_with_slurms_environment(cluster):
    """The variables scalelab.core.distributed and JAX's SLURM detection read, as srun sets them."""
    done = cluster.run('srun', '--ntasks=2', sys.executable, '-c',
                       'import os; from scalelab.core import distributed; '
                       'print(os.environ["SLURM_PROCID"], os.environ["SLURM_NTASKS"], distributed.detected_cluster())',
                       cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split('\n')[:2]) == ['0 2 slurm', '1 2 slurm']
