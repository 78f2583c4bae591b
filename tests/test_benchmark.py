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


@pytest.mark.slow
def test_the_gpt2_preset_times_gpt2_smalls_step_and_shrinks_for_a_cpu(tmp_path):
    """--preset gpt2 is GPT-2 small exactly (HF's 124,439,808 parameters, seq 1024, bfloat16);
    --quick keeps its layout and vocabulary at d_model 64, 2 layers, seq 64, counted by hand."""
    import argparse
    sys.path.insert(0, str(REPO / 'benchmarks'))
    try:
        import step_throughput
    finally:
        sys.path.pop(0)
    from scalelab.training import plan
    full = plan.make(step_throughput.gpt2_config(argparse.Namespace(batch=16, dtype='bfloat16', quick=False)), 1)
    assert full.param_counts['total'] == 124_439_808 and full.cfg.data.seq_len == 1024
    assert full.cfg.train.compute_dtype == 'bfloat16' and full.cfg.model.attention == 'auto'  # cuDNN on a GPU
    out = tmp_path / 'gpt2.json'
    done = subprocess.run([sys.executable, 'benchmarks/step_throughput.py', '--preset', 'gpt2', '--quick',
                           '--out', str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'SCALELAB_PEAK_FLOPS': '1e11'})
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(out.read_text())['gpt2']
    d, layer = 64, 2 * 2 * 64 + 3 * (64 * 64 + 64) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64)
    assert row['non_embedding'] == 2 * layer + 2 * d  # two layers (norms, attention, MLP) and the final norm
    assert row['params'] == 50257 * d + 64 * d + row['non_embedding']  # tied head, learned positions
    assert (row['dtype'], row['seq'], row['preset']) == ('bfloat16', 64, 'gpt2')
    assert row['tokens_per_s'] > 0 and row['mfu'] > 0 and row['mfu_vendor_peak'] is None  # no vendor peak on CPU
    assert f'{row["params"]:,} parameters' in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize('layout', ['default', 'nanodo'])
def test_the_step_profile_books_each_op_to_its_part_and_counts_the_matmuls_by_hand(tmp_path, layout):
    """step_profile.py: the dense matmuls' FLOPs read from the compiled HLO are 6 x the
    layers' matmul weights x tokens, attention's the full L x L square (12 L^2 d per layer and
    example: twice the plan's causal count), the tied head's 6 d V per token; the parts share
    out the time ops ran; RoPE's ops exist only in the default layout, norms in both."""
    out = tmp_path / 'profile.json'
    B, L, d, layers = 8, 64, 128, 2
    done = subprocess.run([sys.executable, 'benchmarks/step_profile.py', '--shapes', f'{d}x{layers}',
                           '--head-dim', '32', '--seq', str(L), '--batch', str(B), '--steps', '1',
                           '--layout', layout, '--out', str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'SCALELAB_PEAK_FLOPS': '1e11'})
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(out.read_text())['shapes'][f'{d}x{layers}']
    parts = {(p['part'], p['kind']): p for p in row['profile']['parts']}
    tokens, vocab = B * L, (row['params'] - row['non_embedding'] - (L * d if layout == 'nanodo' else 0)) // d
    assert parts[('dense projections', 'matmul')]['flops'] == 6 * layers * (4 * d * d + 2 * d * 4 * d) * tokens
    assert parts[('attention (scores, softmax, mix)', 'matmul')]['flops'] == 12 * L * L * d * layers * B
    assert parts[('output head', 'matmul')]['flops'] == 6 * d * vocab * tokens
    assert row['profile']['matmul_flops'] == sum(p['flops'] for p in parts.values()) < row['xla_flops']
    assert sum(p['ms'] for p in parts.values()) == pytest.approx(row['profile']['traced_ms'], rel=1e-9)
    gap = row['gap']   # the traced step, part by part: the parts add up to it
    assert sum(gap.values()) == pytest.approx(row['profile']['step_ms'], rel=1e-9)
    assert gap['causal_masked_half_ms'] == pytest.approx(  # flops.py counts causal attention as half
        1e3 * 12 * L * L * d * layers * B / 2 / row["peak_flops"], rel=1e-9)
    assert (('rope', 'other') in parts) == (layout == 'default') and ('norms', 'other') in parts
    assert ('no source (made by XLA)', 'matmul') not in parts and ('layout copies', 'other') in parts
    assert f'{d}x{layers}' in done.stdout and 'dense projections' in done.stdout


@pytest.mark.parametrize('script', ['step_profile.py', 'step_throughput.py'])
def test_a_malformed_shape_is_one_line_and_exit_2(script):
    done = subprocess.run([sys.executable, f'benchmarks/{script}', '--shapes', '512x8,512'], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--shapes: '512' is not d_model x n_layers" in done.stderr.splitlines()[-1]
