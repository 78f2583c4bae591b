"""The fault matrix of the README's reliability section: each probe, as a user would meet it."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scalelab.core import weights
from scalelab.core.errors import ConfigError
from scalelab.training import loop, metrics
from scalelab.core import workdir as workdir_lib
from scalelab.sweep import results
from tests.helpers import REPO, TEST_CACHE, losses, run_cli, tiny_lm

CONSTANT = {'optim.schedule': 'constant', 'checkpoint.every_steps': 5, 'checkpoint.keep': 3}


def cli_one_line_error(result, *expected):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2 and 'Traceback' not in result.stderr, result.stderr  # 'error: invalid config:' + one
    for text in expected:
        assert text in result.stderr


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """20 uninterrupted steps at a constant learning rate."""
    workdir = tmp_path_factory.mktemp('reference')
    loop.run(tiny_lm(**{**CONSTANT, 'train.steps': 20}), workdir)
    return workdir


def test_rerun_of_a_completed_run_keeps_everything(tmp_path, capsys):
    cfg = tiny_lm(**{'train.steps': 6})
    first = loop.run(cfg, tmp_path)
    files = {name: (tmp_path / name).read_text() for name in ('summary.json', 'metrics.jsonl')}
    assert loop.run(cfg, tmp_path) == first
    assert 'already complete at step 6' in capsys.readouterr().out
    assert {name: (tmp_path / name).read_text() for name in files} == files


def test_kill_before_the_summary_rebuilds_it_without_duplicates(tmp_path):
    cfg = tiny_lm(**{'train.steps': 6})
    first = loop.run(cfg, tmp_path)
    (tmp_path / 'summary.json').unlink()  # as a kill between the final checkpoint and the summary leaves it
    lines = (tmp_path / 'metrics.jsonl').read_text()
    rebuilt = loop.run(cfg, tmp_path)
    assert (tmp_path / 'metrics.jsonl').read_text() == lines  # the final evaluation is not written twice
    for key in ('train_loss', 'eval_loss', 'tokens', 'status', 'step'):
        assert rebuilt[key] == first[key], key
    assert rebuilt['tokens_per_s'] == pytest.approx(first['tokens_per_s'])  # from the logged intervals


def resume_extended(workdir, **extra):
    return loop.run(tiny_lm(**{**CONSTANT, 'train.steps': 20, **extra}), workdir)


def damage_truncate(step_dir):
    for path in (step_dir / 'state').rglob('*'):
        if path.is_file() and path.stat().st_size > 0 and path.name != '_METADATA':
            path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def damage_garble(step_dir):
    (step_dir / 'state' / '_METADATA').write_bytes(b'\x00garbage\xff' * 10)


def damage_remove_data(step_dir):
    for child in (step_dir / 'state').iterdir():
        if child.is_dir():
            shutil.rmtree(child)


@pytest.mark.parametrize('damage', [damage_truncate, damage_garble, damage_remove_data])
def test_a_damaged_newest_checkpoint_falls_back_to_an_older_one(tmp_path, reference, damage, capsys):
    loop.run(tiny_lm(**{**CONSTANT, 'train.steps': 10}), tmp_path)
    damage(tmp_path / 'checkpoints' / '10')
    summary = resume_extended(tmp_path)
    err = capsys.readouterr().err
    assert 'checkpoint 10 in' in err and 'cannot be restored' in err and 'checkpoints.unreadable/10' in err
    assert (tmp_path / 'checkpoints.unreadable' / '10').is_dir()  # kept, not deleted
    assert summary['status'] == 'completed' and summary['step'] == 20
    # resumed from step 5: still exactly the uninterrupted run
    for name, value in weights.load_params_flat(reference).items():
        np.testing.assert_array_equal(weights.load_params_flat(tmp_path)[name], value, err_msg=name)


def test_a_half_written_metrics_line_is_dropped_with_a_warning(tmp_path, reference, capsys):
    loop.run(tiny_lm(**{**CONSTANT, 'train.steps': 10}), tmp_path)
    with (tmp_path / 'metrics.jsonl').open('a') as f:
        f.write('{"step": 11, "loss": 2.3, "l')  # a kill mid-write
    resume_extended(tmp_path)
    assert 'is not whole JSON (a kill mid-write?); dropped' in capsys.readouterr().err
    assert losses(tmp_path) == losses(reference)  # every line parses, none missing or doubled


def test_a_truncated_config_json_is_named_with_what_to_do(tmp_path):
    loop.run(tiny_lm(**{'train.steps': 2}), tmp_path)
    (tmp_path / 'config.json').write_text((tmp_path / 'config.json').read_text()[:100])
    result = run_cli(['--config', 'tests/tiny_config.py', f'--workdir={tmp_path}'])
    cli_one_line_error(result, f'{tmp_path / "config.json"}: corrupt (JSONDecodeError', 'delete it to resume')


def test_a_second_process_on_a_workdir_is_refused_and_a_dead_ones_lock_is_not_stale(tmp_path):
    with workdir_lib.Lock(tmp_path):  # as a live run holds it
        result = run_cli(['--config', 'tests/tiny_config.py', f'--workdir={tmp_path}'])
        cli_one_line_error(result, f'--workdir {tmp_path}: in use by pid {os.getpid()} on ')
        assert not (tmp_path / 'checkpoints').exists()
    # a lock file left by a process that died (its flock went with it) does not block
    (tmp_path / '.lock').write_text(json.dumps({'pid': 999999, 'host': 'gone', 'since': 0}))
    assert loop.run(tiny_lm(**{'train.steps': 2}), tmp_path)['status'] == 'completed'


@pytest.mark.parametrize('where', ['file', 'under_file'])
def test_a_workdir_that_is_a_file_is_one_line(tmp_path, where):
    (tmp_path / 'plain').write_text('x')
    workdir = tmp_path / 'plain' if where == 'file' else tmp_path / 'plain' / 'run'
    result = run_cli(['--config', 'tests/tiny_config.py', f'--workdir={workdir}'])
    cli_one_line_error(result, f'--workdir {workdir}: ', 'a file, not a directory')


@pytest.mark.parametrize('args, expected', [
    (['--config', 'experiments/nonexistent.py'],
     "--config: cannot load the config file: [Errno 2] No such file or directory: 'experiments/nonexistent.py'"),
    (['--config', 'experiments/lm_stdlib.py:tinyy'],
     '--config=experiments/lm_stdlib.py:tinyy: ValueError: :tinyy: unknown size; valid: tiny, small'),
    (['--config', 'tests/tiny_config.py', '--config.optim.learning_rate=inf'],
     'optim.learning_rate=inf: must be a finite number'),
])
def test_bad_command_lines_are_one_line_and_exit_2(tmp_path, args, expected):
    result = run_cli([*args, f'--workdir={tmp_path / "run"}'])
    cli_one_line_error(result, expected)
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_exits_cleanly(tmp_path, sig):
    """The signal arrives at a known point of start-up: the run writes config.json before it
    compiles, the test stops the process there (SIGSTOP), sends the signal, and lets it go on;
    the signal is acted on before any step, every time."""
    proc = subprocess.Popen([sys.executable, '-m', 'scalelab.run', '--config', 'tests/tiny_config.py',
                             f'--workdir={tmp_path}', '--config.train.steps=100000'], cwd=REPO,
                            env={**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120  # a hang guard, not a measurement
    while not (tmp_path / 'config.json').exists():
        assert proc.poll() is None and time.monotonic() < deadline, 'the run never wrote config.json'
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGSTOP)
    proc.send_signal(sig)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert 'Traceback' not in err
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['status'] == 'preempted' and summary['step'] == 0
    assert 'stop requested during start-up: no step taken, nothing to save' in out
    assert not (tmp_path / 'checkpoints').exists() or not any((tmp_path / 'checkpoints').iterdir())


def test_a_diverged_run_exits_3_with_its_step(tmp_path):
    result = run_cli(['--config', 'tests/tiny_config.py', f'--workdir={tmp_path}', '--config.train.steps=30',
                      '--config.optim.learning_rate=1e30', '--config.optim.grad_clip=0.0',
                      '--config.optim.warmup_steps=0'])
    assert result.returncode == 3, result.stderr
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['status'] == 'diverged' and summary['diverged_at_step'] >= 1
    assert all(np.isfinite(v).all() for v in weights.load_params_flat(tmp_path).values()) \
        if (tmp_path / 'checkpoints').exists() and any((tmp_path / 'checkpoints').iterdir()) else True


def test_the_final_line_rounds_its_figures(tmp_path):
    result = run_cli(['--config', 'tests/tiny_config.py', f'--workdir={tmp_path}', '--config.train.steps=2'])
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith('completed at step 2: train loss ') and len(last.split('train loss ')[1].split(',')[0]) == 6


def test_metrics_log_keeps_whole_lines_only(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
    warned = []
    metrics.MetricsLog(path, enabled=True, resume_step=10, warn=warned.append)
    assert metrics.read_jsonl(path) == [{'step': 1, 'loss': 2.0}, {'step': 3, 'loss': 1.0}]
    assert len(warned) == 1 and 'line 2' in warned[0]


def test_config_error_names_a_corrupt_summary(tmp_path):
    loop.run(tiny_lm(**{'train.steps': 2}), tmp_path)
    (tmp_path / 'summary.json').write_text('{')
    with pytest.raises(ConfigError, match='summary.json: corrupt'):
        loop.run(tiny_lm(**{'train.steps': 2}), tmp_path)


def test_export_writes_a_file_as_readable_as_any_other_and_no_warning(tmp_path):
    loop.run(tiny_lm(**{'train.steps': 2}), tmp_path / 'run')
    done = subprocess.run([sys.executable, '-m', 'scalelab.export', f'--workdir={tmp_path / "run"}',
                           f'--out={tmp_path / "m.safetensors"}'], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stderr == '', done.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / 'm.safetensors').stat().st_mode & 0o777 == 0o666 & ~umask


SWEEP = '''
from ml_collections import ConfigDict
from scalelab.sweep import points


def get_config(arg=None):
    cfg = points.default_config()
    cfg.base = 'tests/tiny_config.py'
    cfg.overrides = ConfigDict({'train.steps': 1200, 'train.log_every': 10, 'checkpoint.every_steps': 50},
                               allow_dotted_keys=True)
    cfg.axes = ConfigDict({'seed': (0,)}, allow_dotted_keys=True)
    cfg.fit.bootstrap = 0
    return cfg
'''


@pytest.mark.slow
def test_a_killed_sweep_driver_takes_its_points_along_and_never_runs_one_twice(tmp_path):
    (tmp_path / 'sweep.py').write_text(SWEEP)
    env = {**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)}
    command = [sys.executable, '-m', 'scalelab.sweep', f'--config={tmp_path / "sweep.py"}',
               f'--workdir={tmp_path / "w"}']
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    point = tmp_path / 'w' / 'points' / 'p00-seed0'
    deadline = time.monotonic() + 120
    while not ((point / 'metrics.jsonl').exists() and len(metrics.read_jsonl(point / 'metrics.jsonl')) >= 2):
        assert time.monotonic() < deadline and driver.poll() is None, 'the point never started training'
        time.sleep(0.2)
    holder = workdir_lib.owner(point)
    assert holder is not None
    driver.kill()  # SIGKILL: no handler runs in the driver
    driver.wait()
    deadline = time.monotonic() + 60
    while workdir_lib.owner(point) is not None:  # the point got SIGTERM from the kernel: it checkpoints and exits
        assert time.monotonic() < deadline, 'the point outlived its driver'
        time.sleep(0.2)
    assert json.loads((point / 'summary.json').read_text())['status'] == 'preempted'
    resumes_before = (point / 'log.txt').read_text().count('resumed from')
    with workdir_lib.Lock(point):  # as if an orphan still trained it: the next driver waits and starts nothing
        rerun = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        time.sleep(8)
        assert rerun.poll() is None
        assert (point / 'log.txt').read_text().count('resumed from') == resumes_before
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    assert 'wait  p00-seed0: still trained by pid' in out
    steps = [r['step'] for r in metrics.read_jsonl(point / 'metrics.jsonl') if 'loss' in r]
    assert steps == list(range(10, 1201, 10))  # whole: every log line once, none lost or doubled
    rows = list(csv.DictReader((tmp_path / 'w' / 'results.csv').open()))
    assert [r['status'] for r in rows] == ['completed']


def test_a_failed_attempt_records_its_exit_code_until_a_run_starts(tmp_path):
    """exit.json, what a sweep's table reads for a point run elsewhere (a SLURM array task)."""
    workdir = tmp_path / 'run'
    result = run_cli(['--config', 'tests/tiny_config.py', '--config.optim.learning_rate=-1', f'--workdir={workdir}'])
    cli_one_line_error(result, 'optim.learning_rate=-1.0: must be positive')
    assert not workdir.exists()  # a new path: nothing created
    workdir.mkdir()
    result = run_cli(['--config', 'tests/tiny_config.py', '--config.optim.learning_rate=-1', f'--workdir={workdir}'])
    assert result.returncode == 2
    recorded = workdir_lib.read_exit(workdir)
    assert recorded['exit_code'] == 2 and recorded['error'] == result.stderr.strip().removeprefix('error: ')
    with workdir_lib.Lock(workdir):  # another process holds it: nothing written into its run
        (workdir / workdir_lib.EXIT).unlink()
        workdir_lib.record_exit(workdir, 2, 'refused')
        assert workdir_lib.read_exit(workdir) is None
    workdir_lib.record_exit(workdir, 1, 'RuntimeError: boom')
    assert results.point_status({'status': 'preempted'}, workdir_lib.read_exit(workdir)) == 'failed (exit 1)'
    assert results.point_status({}, None) == 'missing'
    result = run_cli(['--config', 'tests/tiny_config.py', '--config.train.steps=2', f'--workdir={workdir}'])
    assert result.returncode == 0, result.stderr[-2000:]
    assert workdir_lib.read_exit(workdir) is None  # the attempt that trained removed it
    summary = json.loads((workdir / 'summary.json').read_text())
    workdir_lib.record_exit(workdir, 2, 'a later typo')  # a finished run's status outlives a later failure
    assert results.point_status(summary, workdir_lib.read_exit(workdir)) == 'completed'
