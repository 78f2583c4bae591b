"""The throughput benchmark runs and writes its JSON (figures are not asserted: they are timings)."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_step_throughput_quick_run_writes_results(tmp_path):
    out = tmp_path / 'bench.json'
    done = subprocess.run([sys.executable, 'benchmarks/step_throughput.py', '--quick', '--out', str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'SCALELAB_PEAK_FLOPS': '1e11'})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {'shapes', 'data_parallel', 'compile_time', 'loop_overhead', 'measured_peak_flops'} <= result.keys()
    row = result['shapes'][0]
    assert row['tokens_per_s'] > 0 and 0 < row['mfu'] and row['compile_s'] > 0
    assert result['compile_time']['scan_ratio'] > 0 and 'MFU' in done.stdout
    assert all(result['diagnostics'][f'{mode}_step_ms'] > 0
               for mode in ('none', 'global', 'groups', 'default', 'micro4', 'micro4_noise_scale'))
    assert 'the gradient noise scale over 4 microbatches' in done.stdout


@pytest.mark.slow
def test_data_loading_quick_run_writes_results(tmp_path):
    out = tmp_path / 'data.json'
    done = subprocess.run([sys.executable, 'benchmarks/data_loading.py', '--quick', '--out', str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'SCALELAB_PEAK_FLOPS': '1e11'})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [row['processes'] for row in result['prepare']] == [1, 2]
    assert result['prepare'][0]['tokens'] == result['prepare'][1]['tokens'] > 0  # the same corpus either way
    assert all(row['tokens_per_s'] > 0 and row['times_default_step'] > 0 for row in result['loader'])
    assert 'x the step' in done.stdout
