"""The launch scripts: shellcheck-clean, their dry-run command lines exact, and the TPU VM
script's setup and run carried out here through a fake gcloud (SLURM's on a real cluster:
test_slurm.py)."""
import json
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, TEST_CACHE

LAUNCH = REPO / 'launch'
SHELLCHECK = shutil.which('shellcheck') or str(Path(sys.executable).parent / 'shellcheck')


def script(name, *args, cwd=None):
    return subprocess.run([str(LAUNCH / name), *args], capture_output=True, text=True, timeout=30, cwd=cwd)


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
    done = script('slurm.sh', '--dry-run', 'submit', '--nodes', '4', '--ntasks-per-node', '2', '--gpus-per-node', '4',
                  '--time', '24:00:00', '--partition', 'gpu', '--logs', '/shared/logs', '--', 'python', '-m',
                  'scalelab.run', '--config', 'experiments/lm_stdlib.py:gpt2', '--workdir', '/shared/runs/gpt 2')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ('sbatch --parsable --job-name=scalelab --export=ALL,SCALELAB_SLURM_LOGS=/shared/logs '
                                   '--partition=gpu --time=24:00:00 --gpus-per-node=4 --ntasks-per-node=2 --nodes=4 '
                                   f'--output=/shared/logs/%x-%j.out {LAUNCH}/slurm.sbatch python -m scalelab.run '
                                   "--config experiments/lm_stdlib.py:gpt2 --workdir '/shared/runs/gpt 2'")
    assert not Path('/shared/logs').exists()  # a dry run creates nothing
    commands = tmp_path / 'points.txt'
    commands.write_text('python -m scalelab.run --workdir a\npython -m scalelab.run --workdir b\n'
                        'python -m scalelab.run --workdir c\n')
    done = script('slurm.sh', '--dry-run', 'array', '--commands', 'points.txt', '--max-parallel', '2', cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f'sbatch --parsable --job-name=scalelab-sweep --export=ALL,SCALELAB_SLURM_LOGS='
                                   f'{tmp_path}/slurm-logs --array=0-2%2 --output={tmp_path}/slurm-logs/%x-%A_%a.out '
                                   f'{LAUNCH}/slurm_array.sbatch {commands}')


@pytest.mark.parametrize('args, error', [
    (['submit', '--', 'x'], 'submit needs --nodes'),
    (['submit', '--nodes', 'two', '--', 'x'], "--nodes must be a positive integer, got 'two'"),
    (['submit', '--nodes', '2'], 'submit needs a command after --'),
    (['array'], 'array needs --commands FILE'),
    (['array', '--commands', '/no/such file'], '--commands /no/such file: no such file'),
    ([], 'missing mode'),
    (['array', '--commands', 'x', '--ntasks-per-node', '2'], '--ntasks-per-node is for submit'),
    (['submit', '--nodes', '1', '--ntasks-per-node', '0', '--', 'x'], "--ntasks-per-node must be a positive integer"),
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


def fake_gcloud(tmp_path):
    """A `gcloud` first on PATH that records its arguments and runs an ssh --command here, in
    $HOME, as the one worker of a slice would; and a `python3` that records pip calls."""
    bin_dir, home = tmp_path / 'bin', tmp_path / 'home'
    bin_dir.mkdir()
    home.mkdir()
    (bin_dir / 'gcloud').write_text(
        f'#!{sys.executable}\nimport json, os, subprocess, sys\nargs = sys.argv[1:]\n'
        f'with open({str(tmp_path / "gcloud.jsonl")!r}, "a") as f:\n    f.write(json.dumps(args) + "\\n")\n'
        'if "--command" in args:\n'
        '    sys.exit(subprocess.run(["bash", "-c", args[args.index("--command") + 1]], cwd=os.environ["HOME"]).returncode)\n')
    (bin_dir / 'python3').write_text(
        f'#!{sys.executable}\nimport json, os, sys\n'
        f'with open({str(tmp_path / "python3.jsonl")!r}, "a") as f:\n'
        '    f.write(json.dumps({"args": sys.argv[1:], "cwd": os.getcwd()}) + "\\n")\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {'HOME': str(home), 'PATH': f'{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin',
           'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@t'}
    return env, home


def calls(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def tpu_vm(env, *args, dry_run=False):
    return subprocess.run([str(LAUNCH / 'tpu_vm.sh'), *(['--dry-run'] if dry_run else []), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_tpu_vm_setup_clones_then_updates_and_installs_on_the_worker(tmp_path):
    env, home = fake_gcloud(tmp_path)
    origin = tmp_path / 'origin'
    git = lambda *a: subprocess.run(['git', '-C', str(origin), *a], env=env, check=True, capture_output=True)
    origin.mkdir()
    git('init', '-q', '-b', 'main')
    (origin / 'marker.txt').write_text('one\n')
    git('add', '.')
    git('commit', '-q', '-m', 'one')
    git('checkout', '-q', '-b', 'dev')
    args = ('setup', '--name', 'w1', '--zone', 'z', '--repo', str(origin), '--branch', 'dev')
    done = tpu_vm(env, *args)
    assert done.returncode == 0, done.stderr
    assert [['gcloud', *c] for c in calls(tmp_path / 'gcloud.jsonl')] == [shlex.split(tpu_vm(env, *args, dry_run=True).stdout)]
    checkout = home / 'scalelab'
    assert (checkout / 'marker.txt').read_text() == 'one\n'
    branch = subprocess.run(['git', '-C', str(checkout), 'branch', '--show-current'], capture_output=True, text=True)
    assert branch.stdout.strip() == 'dev'
    assert calls(tmp_path / 'python3.jsonl') == [{'args': ['-m', 'pip', 'install', '-q', '-e', '.[tpu]'],
                                                  'cwd': str(checkout)}]
    (origin / 'marker.txt').write_text('two\n')  # a second setup pulls the branch's new commit
    git('commit', '-q', '-am', 'two')
    assert tpu_vm(env, *args).returncode == 0
    assert (checkout / 'marker.txt').read_text() == 'two\n'
    assert len(calls(tmp_path / 'python3.jsonl')) == 2


@pytest.mark.slow
def test_tpu_vm_run_starts_the_command_in_the_background_and_logs_shows_it(tmp_path):
    env, home = fake_gcloud(tmp_path)
    env['SCALELAB_COMPILATION_CACHE'] = str(TEST_CACHE)
    workdir = tmp_path / 'run'
    done = tpu_vm(env, 'run', '--name', 'w1', '--zone', 'z', '--dir', str(REPO), '--', 'python', '-m', 'scalelab.run',
                  '--config', 'tests/tiny_config.py', f'--workdir={workdir}', '--config.train.steps=3')
    assert done.returncode == 0, done.stderr  # returns at once: the run goes on under nohup
    log = home / 'scalelab-logs' / f'w1-{socket.gethostname()}.log'
    deadline = time.monotonic() + 180
    while not (workdir / 'summary.json').exists():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    assert json.loads((workdir / 'summary.json').read_text())['status'] == 'completed'
    deadline = time.monotonic() + 30  # the summary is written just before the last console line
    while 'completed at step 3' not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    shown = tpu_vm(env, 'logs', '--name', 'w1', '--zone', 'z')
    assert shown.returncode == 0 and 'completed at step 3' in shown.stdout
