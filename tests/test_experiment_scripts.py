"""The experiment scripts under benchmarks/ stop when told: a signal to one stops the whole
experiment, not only the run it was training (which would let the script go on to its next
run), and running it again resumes that run from its checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

from tests.helpers import REPO, TEST_CACHE


def last_step(workdir) -> int:
    complete = (workdir / 'metrics.jsonl').read_text().split('\n')[:-1]  # a line being written is left out
    return max(json.loads(line)['step'] for line in complete)


def test_a_signal_stops_the_experiment_and_a_rerun_resumes_it(tmp_path):
    runs = tmp_path / 'runs'
    command = [sys.executable, 'benchmarks/optimizer_comparison.py', '--size', 'tiny', '--steps', '100000',
               '--runs', str(runs), '--out', str(tmp_path / 'out')]
    env = {**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = runs / 'adamw_lr0.001_s0'  # the first rung of the first optimizer
    deadline = time.monotonic() + 120  # a hang guard, not a measurement
    while not (first / 'metrics.jsonl').exists() or not (first / 'metrics.jsonl').read_text().strip():
        assert proc.poll() is None and time.monotonic() < deadline, 'the first run never logged a step'
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    stopped = json.loads((first / 'summary.json').read_text())
    assert stopped['status'] == 'preempted' and stopped['step'] > 0
    assert f'{first}: stopped at step {stopped["step"]} by a signal; run the script again to resume' in err
    assert [p.name for p in runs.iterdir()] == [first.name]  # no second run started
    again = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while last_step(first) <= stopped['step']:
        assert again.poll() is None and time.monotonic() < deadline, 'the rerun never went past the stop'
        time.sleep(0.05)
    again.send_signal(signal.SIGTERM)
    out, err = again.communicate(timeout=120)
    assert f'resumed from step {stopped["step"]}' in out, out
