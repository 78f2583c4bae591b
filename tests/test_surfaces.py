"""Nothing misreported on the command-line surfaces: bad input is one line and exit 2, a
long generation is refused before it allocates, MFU's peak cannot stay low, plots say what
they wrote. Each case was a traceback, a silent surprise or a wrong number before."""
import json
import math
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from scalelab.core.errors import ConfigError
from scalelab.science import flops
from scalelab.sweep import lr_laws
from scalelab.training import loop, plot
from scalelab.use import generate, inference
from scalelab.sweep import points as points_lib
from tests.helpers import REPO, TEST_CACHE, run_cli, tiny_lm

ENV = {'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)}


def cli(module, *args):
    import os
    return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **ENV})


@pytest.fixture(scope='module')
def lm_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('lm') / 'w'
    loop.run(tiny_lm(**{'train.steps': 4}), workdir)
    return workdir


@pytest.fixture
def odd_files(tmp_path):
    (tmp_path / 'binary.bin').write_bytes(b'\x7fELF\x00\x01\x02')
    (tmp_path / 'latin1.txt').write_bytes('déjà vu\n'.encode('latin-1'))
    (tmp_path / 'empty.txt').write_text('\n  \n')
    return tmp_path


@pytest.mark.parametrize('args, expected', [
    (['--text', ''], 'error: --text: an empty sentence; give words to translate (--help for usage)'),
    (['--file', '{d}/binary.bin'], 'error: --file {d}/binary.bin: not UTF-8 text (a NUL byte at byte 4); give a '
                                   'file of sentences, one per line (--help for usage)'),
    (['--file', '{d}/latin1.txt'], 'error: --file {d}/latin1.txt: not UTF-8 text (invalid continuation byte at '
                                   'byte 1); give a file of sentences, one per line (--help for usage)'),
    (['--file', '{d}/empty.txt'], 'error: --file {d}/empty.txt: holds no sentence (it is empty or blank); give one '
                                  'sentence per line (--help for usage)'),
])
def test_translate_refuses_what_it_cannot_translate_in_one_line(odd_files, args, expected):
    done = cli('scalelab.translate', '--workdir', str(odd_files / 'no_run'), *[a.format(d=odd_files) for a in args])
    assert done.returncode == 2 and done.stderr.strip() == expected.format(d=odd_files) and not done.stdout


def test_evaluate_names_the_file_it_cannot_decode_and_reads_it_with_an_encoding(lm_workdir, odd_files):
    binary = cli('scalelab.evaluate', '--workdir', str(lm_workdir), '--text', str(odd_files / 'binary.bin'))
    assert binary.returncode == 2
    assert binary.stderr.strip() == f'error: --text {odd_files}/binary.bin: a binary file (a NUL byte at byte 4), not text'
    latin = cli('scalelab.evaluate', '--workdir', str(lm_workdir), '--text', str(odd_files / 'latin1.txt'))
    assert latin.returncode == 2 and latin.stderr.strip() == (
        f'error: --text {odd_files}/latin1.txt: not utf-8 text (invalid continuation byte at byte 1); pass '
        '--encoding (e.g. latin-1) if it is text in another encoding')
    decoded = cli('scalelab.evaluate', '--workdir', str(lm_workdir), '--text', str(odd_files / 'latin1.txt'),
                  '--encoding', 'latin-1')
    assert decoded.returncode == 0, decoded.stderr
    # 'déjà vu\n' is 10 UTF-8 bytes, 10 byte tokens, 9 of them scored
    assert '(9 tokens, 9 bytes' in decoded.stdout


def test_generate_refuses_a_cache_the_machine_cannot_hold_and_warns_past_the_training_context(lm_workdir):
    lm = inference.load(lm_workdir)
    per_position = generate.cache_bytes_per_position(lm.model_cfg, 1)
    head = lm.model_cfg.d_model // lm.model_cfg.n_heads
    assert per_position == 2 * lm.model_cfg.n_layers * lm.model_cfg.n_kv_heads * head * 4  # keys+values, float32
    huge = cli('scalelab.generate', '--workdir', str(lm_workdir), '--prompt', 'def', '--max-new-tokens', '1000000000')
    assert huge.returncode == 2 and len(huge.stderr.strip().splitlines()) == 1, huge.stderr
    fits = generate.memory_bytes() // 2 // per_position - 3  # 'def': 3 byte tokens
    assert huge.stderr.startswith('error: --max-new-tokens=1000000000: the KV cache of 1,000,000,003 positions would '
                                  f'need {1_000_000_003 * per_position / 2 ** 30:,.1f} GiB')
    assert f'at most {fits:,} new tokens fit' in huge.stderr
    long = cli('scalelab.generate', '--workdir', str(lm_workdir), '--prompt', 'x' * 40, '--max-new-tokens', '2',
               '--temperature', '0')
    assert long.returncode == 0, long.stderr
    assert f'warning: prompt (40 tokens) + 2 new tokens run past the {lm.context} tokens of context the model was ' \
           'trained on' in long.stderr


@pytest.mark.parametrize('value', ['0', '-1'])
def test_cpu_devices_below_one_are_refused(tmp_path, value):
    done = run_cli(['--config', 'experiments/lm_stdlib.py:tiny', f'--workdir={tmp_path / "w"}',
                    f'--cpu-devices={value}'], timeout=120)
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert done.stderr.splitlines()[0] == f'error: flag --cpu-devices={value}: {value} is not a positive integer'
    assert not (tmp_path / 'w').exists()


def test_a_learning_rate_law_works_with_its_group_column_missing_and_a_sweep_says_what_it_needs(monkeypatch):
    """A transfer sweep with the parametrization in `overrides` (not an axis) has no such column:
    it used to end, after every run, in KeyError: 'model.parametrization'."""
    rows = [{'name': f'p{i}', 'status': 'completed', 'model.d_model': w, 'optim.learning_rate': lr, 'seed': '',
             'loss': 2.0 + (math.log10(lr) + 2.5) ** 2 - 0.1 * math.log2(w)}
            for i, (w, lr) in enumerate((w, lr) for w in (32, 64) for lr in (1e-3, 3e-3, 1e-2, 3e-2))]
    report = lr_laws.lr_transfer([{k: str(v) for k, v in r.items()} for r in rows])
    assert list(report['curves']) == ['all']
    assert report['curves']['all']['wider_is_better']['holds']
    monkeypatch.chdir(REPO)
    sweep = points_lib.load_experiment('experiments/mup_lr_transfer.py')
    sweep.overrides['optim.learning_rate'] = 1e-3
    del sweep.axes['optim.learning_rate']
    with pytest.raises(ConfigError, match=r"fit.law='lr_transfer' needs 'optim.learning_rate' as an axis \(a column "
                                          r"of results.csv\); the sweep sets it in overrides"):
        points_lib.expand(sweep, 1)


def test_a_peak_measured_low_is_replaced_by_a_higher_one_and_the_summary_says_which(tmp_path, monkeypatch):
    monkeypatch.delenv('SCALELAB_PEAK_FLOPS')
    cache_dir = tmp_path / 'new' / 'scalelab'   # made, parents and all
    monkeypatch.setattr(flops, '_CACHE', cache_dir)
    measured, asked = iter([108e9, 194e9, 150e9]), []
    monkeypatch.setattr(flops, 'measure_matmul_flops', lambda device, dtype: asked.append((device, dtype))
                        or next(measured))
    first = flops.cpu_peak()
    assert first.flops == 108e9 and first.measured_at.endswith('+00:00') and first.source.startswith('measured')
    assert asked == [(jax.devices('cpu')[0], 'float32')]
    assert flops.cpu_peak().flops == 108e9  # cached: not measured again
    assert flops.cpu_peak(remeasure=True).flops == 194e9  # a higher measurement replaces it
    assert flops.cpu_peak(remeasure=True).flops == 194e9  # a lower one (150e9) never does
    cache = json.loads((cache_dir / 'cpu_peak.json').read_text())
    assert [entry['flops'] for entry in cache.values()] == [194e9]
    (cache_dir / 'cpu_peak.json').write_text(json.dumps({key: 123e9 for key in cache}))   # the first format: a number
    assert flops.cpu_peak() == flops.Peak(123e9, 'measured matmul (highest seen on this host)', None)
    monkeypatch.setenv('SCALELAB_PEAK_FLOPS', '5e10')
    assert flops.cpu_peak() == flops.Peak(5e10, 'SCALELAB_PEAK_FLOPS')
    monkeypatch.delenv('SCALELAB_PEAK_FLOPS')
    # a run that reaches 90% of a measured peak has it measured again before its summary's MFU
    run = type('Run', (), {'peak': first, 'cfg': tiny_lm(), 'mesh': type('Mesh', (), {'devices': np.array([0])})})
    monkeypatch.setattr(flops, 'total_peak', lambda devices, dtype, remeasure=False: flops.Peak(999e9, 'measured x', 'now'))
    assert loop.checked_peak(run, 0.5 * first.flops) is first
    assert loop.checked_peak(run, 0.95 * first.flops).flops == 999e9


def test_the_run_s_peak_sums_chips_and_counts_a_cpu_process_once(monkeypatch):
    """Accelerators: the vendor figure of the longest table name the kind contains, times the
    chips; CPU devices: one measured peak per process (its virtual devices share its cores),
    asked for the run's dtype and passing `remeasure` on; an unknown chip: no peak."""
    asked = []
    monkeypatch.setattr(flops, 'cpu_peak', lambda dtype, remeasure: asked.append((dtype, remeasure))
                        or flops.Peak(100e9, 'measured', 'then'))
    cpu = [types.SimpleNamespace(platform='cpu', process_index=i // 4) for i in range(8)]
    assert flops.total_peak(cpu[:4], 'bfloat16', True) == flops.Peak(100e9, 'measured', 'then')
    assert flops.total_peak(cpu, 'float32') == flops.Peak(200e9, 'measured', 'then')
    assert asked == [('bfloat16', True), ('float32', False)]
    chip = types.SimpleNamespace(platform='tpu', device_kind='TPU v5 lite', process_index=0)
    assert flops.device_kind(chip) == 'TPU v5 lite'                 # not 'TPU v5', which it also contains
    assert flops.total_peak([chip] * 4, 'bfloat16') == flops.Peak(4 * 197e12, 'vendor table: TPU v5 lite bfloat16')
    h200 = types.SimpleNamespace(platform='gpu', device_kind='NVIDIA H200', process_index=0)
    assert flops.device_peak_flops(h200, 'float32') == 494.5e12
    odd = types.SimpleNamespace(platform='gpu', device_kind='Some GPU', process_index=0)
    assert flops.device_kind(odd) is None and flops.device_peak_flops(odd, 'float32') is None
    assert flops.total_peak([odd], 'float32') is None


def test_the_matmul_peak_is_the_best_of_its_timed_repeats(monkeypatch):
    """2 n^3 FLOPs over the fastest of `reps` timed matmuls (a clock that reads 0.5 s, 0.2 s and
    0.3 s for the three), the warm-up call untimed."""
    ticks = iter([0.0, 0.5, 1.0, 1.2, 2.0, 2.3])
    monkeypatch.setattr(flops.time, 'perf_counter', lambda: next(ticks))
    placed, device_put = [], jax.device_put
    monkeypatch.setattr(flops.jax, 'device_put', lambda x, device: placed.append((x.dtype, device)) or device_put(x, device))
    device = jax.devices('cpu')[1]
    assert flops.measure_matmul_flops(device, 'bfloat16', n=64, reps=3) == pytest.approx(2.0 * 64 ** 3 / 0.2, rel=1e-12)
    assert next(ticks, 'all read') == 'all read' and placed == [(jnp.bfloat16, device)]


def test_the_summary_records_the_peak_its_mfu_divides_by(lm_workdir):
    summary = json.loads((lm_workdir / 'summary.json').read_text())
    assert summary['peak'] == {'flops': 1e11, 'source': 'SCALELAB_PEAK_FLOPS', 'measured_at': None}
    steps_flops = summary['flops_per_step'] * summary['tokens_per_s'] / summary['tokens_per_step']
    assert summary['mfu'] == pytest.approx(steps_flops / 1e11)


def test_plot_labels_the_final_losses_and_says_what_it_wrote(tmp_path):
    for name, final in (('a', 1.57), ('b', 1.85)):
        (tmp_path / name).mkdir()
        lines = [{'step': s, 'loss': final + 3.0 / s, 'tokens': 100 * s, 'flops': 1e9 * s} for s in range(1, 60)]
        (tmp_path / name / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
    (tmp_path / 'out').mkdir()
    done = cli('scalelab.plot', str(tmp_path / 'a'), '--out', str(tmp_path / 'figure'))
    assert done.returncode == 0 and done.stdout.strip() == f'wrote {tmp_path / "figure.png"} (1 run, loss against steps)'
    assert (tmp_path / 'figure.png').exists()
    done = cli('scalelab.plot', str(tmp_path / 'a'), str(tmp_path / 'b'), '--out', str(tmp_path / 'out'))
    assert done.stdout.strip() == f'wrote {tmp_path / "out" / "runs.png"} (2 runs, loss against steps)'
    fig = plot.plot_runs({'a': tmp_path / 'a', 'b': tmp_path / 'b'}, 'steps', tmp_path / 'x.png')
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels() if 1.5 <= t.get_position()[1] <= 1.9]
    assert '1.6' in labels and '1.8' in labels  # the final losses can be read off
    assert all('times' not in t.get_text() and '^' not in t.get_text() for t in ax.get_yticklabels())
    matplotlib.pyplot.close(fig)


def test_scaling_plots_never_label_a_loss_axis_in_scientific_notation(tmp_path):
    from scalelab.sweep import plots, results
    N = np.geomspace(1e4, 1e7, 8)
    fit = results.fit_table({'N': N, 'loss': 2.5 + 30 * N ** -0.3}, 'power', bootstrap=0)
    plots.plot(fit, {'N': N, 'loss': 2.5 + 30 * N ** -0.3}, tmp_path / 'scaling.png')
    fig = plots._power(fit, {'N': N, 'loss': 2.5 + 30 * N ** -0.3})
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert labels and all(all(ch in '0123456789.−-' for ch in label) for label in labels), labels
    matplotlib.pyplot.close(fig)
