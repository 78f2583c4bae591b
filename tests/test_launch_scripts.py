"""The launch scripts: shellcheck-clean, and their dry-run command lines exact."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

LAUNCH = REPO / 'launch'
SHELLCHECK = shutil.which('shellcheck') or str(Path(sys.executable).parent / 'shellcheck')


def script(name, *args):
    return subprocess.run([str(LAUNCH / name), *args], capture_output=True, text=True, timeout=30)


def test_scripts_pass_shellcheck():
    files = sorted(str(p) for p in LAUNCH.iterdir() if p.suffix in ('.sh', '.sbatch'))
    assert len(files) == 5  # common.sh, slurm.sbatch, slurm.sh, slurm_array.sbatch, tpu_vm.sh
    done = subprocess.run([SHELLCHECK, '-x', *files], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize('args, expected', [
    (['create', '--name', 'scale-v5p', '--zone', 'us-east5-a', '--accelerator', 'v5p-32', '--spot'],
     'gcloud compute tpus tpu-vm create scale-v5p --zone us-east5-a --accelerator-type v5p-32 '
     '--version tpu-ubuntu2204-base --spot'),
    (['create', '--name', 'q1', '--zone', 'us-central2-b', '--accelerator', 'v4-32', '--queued', '--project', 'p-1'],
     'gcloud --project p-1 compute tpus queued-resources create q1 --node-id q1 --zone us-central2-b '
     '--accelerator-type v4-32 --runtime-version tpu-ubuntu2204-base'),
    (['run', '--name', 'scale-v5p', '--zone', 'us-east5-a', '--', 'python', '-m', 'scalelab.run', '--config',
      'experiments/lm_stdlib.py:gpt2', '--workdir', 'gs://bucket/run one'],
     "gcloud compute tpus tpu-vm ssh scale-v5p --zone us-east5-a --worker=all --command 'mkdir -p ~/scalelab-logs "
     "&& cd scalelab && nohup python -m scalelab.run --config experiments/lm_stdlib.py:gpt2 --workdir "
     "'\\''gs://bucket/run one'\\'' > ~/scalelab-logs/scale-v5p-$(hostname).log 2>&1 < /dev/null &'"),
    (['logs', '--name', 'scale-v5p', '--zone', 'us-east5-a'],
     "gcloud compute tpus tpu-vm ssh scale-v5p --zone us-east5-a --worker=all --command "
     "'tail -n 40 ~/scalelab-logs/scale-v5p-*.log'"),
    (['delete', '--name', 'scale-v5p', '--zone', 'us-east5-a'],
     'gcloud compute tpus tpu-vm delete scale-v5p --zone us-east5-a --quiet'),
])
def test_tpu_vm_dry_run(args, expected):
    done = script('tpu_vm.sh', '--dry-run', *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_tpu_vm_setup_dry_run_clones_and_installs_on_every_worker():
    done = script('tpu_vm.sh', '--dry-run', 'setup', '--name', 'a1', '--zone', 'z', '--repo',
                  'https://example.com/scalelab.git', '--branch', 'dev')
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('gcloud compute tpus tpu-vm ssh a1 --zone z --worker=all --command ')
    assert 'git clone --branch dev https://example.com/scalelab.git scalelab' in done.stdout
    assert "pip install -q -e '\\''.[tpu]'\\''" in done.stdout


@pytest.mark.parametrize('args, error', [
    (['run', '--name', 'my tpu', '--zone', 'z', '--', 'x'], "bad --name 'my tpu'"),
    (['create', '--zone', 'z'], 'missing --name'),
    (['create', '--name', 'a'], 'missing --zone'),
    (['--name', 'a', '--zone', 'z'], 'missing ACTION'),
    (['run', '--name', 'a', '--zone', 'z'], 'run needs a command after --'),
    (['create', '--name', 'a', '--zone', 'z', '--accelerator', 'v5p 32'], "bad --accelerator 'v5p 32'"),
    (['create', '--name', 'a', '--zone'], '--zone needs a value'),
    (['reboot', '--name', 'a', '--zone', 'z'], 'unknown argument: reboot'),
])
def test_tpu_vm_usage_errors(args, error):
    done = script('tpu_vm.sh', '--dry-run', *args)
    assert done.returncode == 2
    assert f'error: {error}' in done.stderr and 'ACTION' in done.stderr and not done.stdout


def test_slurm_submit_and_array_dry_runs(tmp_path):
    done = script('slurm.sh', '--dry-run', 'submit', '--nodes', '4', '--gpus-per-node', '8', '--time', '24:00:00',
                  '--partition', 'gpu', '--', 'python', '-m', 'scalelab.run', '--config', 'experiments/lm_stdlib.py:gpt2',
                  '--workdir', '/shared/runs/gpt 2')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f'sbatch --partition=gpu --time=24:00:00 --gpus-per-node=8 --nodes=4 '
                                   f'{LAUNCH}/slurm.sbatch python -m scalelab.run --config '
                                   f"experiments/lm_stdlib.py:gpt2 --workdir '/shared/runs/gpt 2'")
    commands = tmp_path / 'points.txt'
    commands.write_text('python -m scalelab.run --workdir a\npython -m scalelab.run --workdir b\n'
                        'python -m scalelab.run --workdir c\n')
    done = script('slurm.sh', '--dry-run', 'array', '--commands', str(commands), '--max-parallel', '2')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'sbatch --array=0-2%2 {LAUNCH}/slurm_array.sbatch {commands}'


@pytest.mark.parametrize('args, error', [
    (['submit', '--', 'x'], 'submit needs --nodes'),
    (['submit', '--nodes', 'two', '--', 'x'], "--nodes must be a positive integer, got 'two'"),
    (['submit', '--nodes', '2'], 'submit needs a command after --'),
    (['array'], 'array needs --commands FILE'),
    (['array', '--commands', '/no/such file'], '--commands /no/such file: no such file'),
    ([], 'missing mode'),
])
def test_slurm_usage_errors(args, error):
    done = script('slurm.sh', '--dry-run', *args)
    assert done.returncode == 2
    assert f'error: {error}' in done.stderr and not done.stdout


def test_slurm_array_task_runs_its_line(tmp_path):
    commands = tmp_path / 'c.txt'
    commands.write_text('echo first\necho "second point"\n')
    done = subprocess.run(['bash', str(LAUNCH / 'slurm_array.sbatch'), str(commands)], capture_output=True,
                          text=True, env={'SLURM_ARRAY_TASK_ID': '1', 'PATH': '/usr/bin:/bin'})
    assert done.returncode == 0 and done.stdout.strip().endswith('second point')
