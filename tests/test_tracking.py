"""Where runs are watched: TensorBoard event files read back by TensorBoard's own reader,
W&B through its API (a stand-in module), progress bars only on a terminal, plots of
runs, one atomic writer, and one flag style across the commands."""
import io
import json
import os
import subprocess
import sys
import types

import pytest
from tensorboard.backend.event_processing import event_accumulator

from scalelab.core import cli, files, progress
from scalelab.core.errors import ConfigError
from scalelab.training import loop, metrics, plot, writers
from tests.helpers import REPO, TEST_CACHE, tiny_lm


def tb_scalars(directory) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} as TensorBoard reads the event files (the last value of a step wins)."""
    acc = event_accumulator.EventAccumulator(str(directory), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()['scalars']}


@pytest.fixture(scope='module')
def tracked_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('tracked')
    cfg = tiny_lm(**{'train.steps': 12, 'train.log_every': 3, 'train.eval_every': 6})
    summary = loop.run(cfg, workdir)
    return workdir, summary


def test_event_files_hold_the_jsonl_scalars(tracked_run):
    workdir, _ = tracked_run
    scalars = tb_scalars(workdir / writers.TB_DIR)
    records = metrics.read_jsonl(workdir / 'metrics.jsonl')
    compared = 0
    for record in records:
        for tag, value in writers.scalars(record).items():
            assert scalars[tag][record['step']] == pytest.approx(value, rel=1e-6, abs=1e-30), (tag, record['step'])
            compared += 1
    assert {'train/loss', 'train/lr', 'train/grad_norm', 'eval/loss', 'param_norm/blocks.0.attn',
            'update_ratio/embed', 'train/update_ratio'} <= set(scalars)
    assert sorted(scalars['train/loss']) == [3, 6, 9, 12] and sorted(scalars['eval/loss']) == [6, 12]
    assert compared > 100


def test_resumed_writers_replace_what_the_killed_session_wrote(tmp_path):
    log_cfg = tiny_lm().log
    first = writers.Writers(tmp_path, log_cfg, {}, enabled=True, resume_step=0)
    for step in range(1, 9):
        first.write({'step': step, 'loss': 10.0 + step})
    first.close()  # killed after step 8; its last checkpoint was step 5
    second = writers.Writers(tmp_path, log_cfg, {}, enabled=True, resume_step=5)
    for step in range(6, 11):
        second.write({'step': step, 'loss': 20.0 + step})
    second.close()
    expected = {**{k: 10.0 + k for k in range(1, 6)}, **{k: 20.0 + k for k in range(6, 11)}}
    assert tb_scalars(tmp_path / writers.TB_DIR)['train/loss'] == pytest.approx(expected)
    assert {r['step']: r['loss'] for r in metrics.read_jsonl(tmp_path / 'metrics.jsonl')} == expected


def test_tags():
    assert writers.tag('loss') == 'train/loss' and writers.tag('eval_bits_per_byte') == 'eval/bits_per_byte'
    assert writers.tag('grad_norm/blocks.0.mlp') == 'grad_norm/blocks.0.mlp'
    assert writers.scalars({'step': 3, 'mfu': None, 'loss_z': float('nan'), 'topology': {}, 'finite': True,
                            'loss': 2}) == {'train/loss': 2.0}


class FakeWandb(types.ModuleType):
    """The part of wandb's API scalelab calls, recording what it is given."""

    def __init__(self):
        super().__init__('wandb')
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        module = self

        class Run:
            def log(self, values, step):
                module.logged.append((step, dict(values)))

            def finish(self):
                module.finished += 1
        return Run()


def test_wandb_gets_the_same_scalars_and_one_run_per_workdir(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, 'wandb', fake)
    monkeypatch.delenv('WANDB_MODE', raising=False)
    cfg = tiny_lm(**{'train.steps': 6, 'train.log_every': 3, 'log.wandb': 'scalelab-test',
                     'log.wandb_mode': 'offline', 'log.tensorboard': False})
    loop.run(cfg, tmp_path)
    (init,) = fake.inits
    assert init['project'] == 'scalelab-test' and init['mode'] == 'offline' and init['resume'] == 'allow'
    assert init['config']['model']['d_model'] == 32 and fake.finished == 1
    records = [r for r in metrics.read_jsonl(tmp_path / 'metrics.jsonl')]
    assert fake.logged == [(r['step'], writers.scalars(r)) for r in records]
    assert not (tmp_path / writers.TB_DIR).exists()
    run_id = (tmp_path / writers.WANDB_ID_FILE).read_text().strip()
    loop.run(tiny_lm(**{'train.steps': 9, 'train.log_every': 3, 'log.wandb': 'scalelab-test',
                        'log.wandb_mode': 'offline', 'log.tensorboard': False, 'optim.schedule': 'constant',
                        'optim.warmup_steps': 0}), tmp_path / 'other')
    assert fake.inits[1]['id'] != run_id  # another workdir, another run
    assert writers.wandb_mode('online') == 'online'
    monkeypatch.setenv('WANDB_MODE', 'disabled')
    assert writers.wandb_mode('auto') == 'disabled'


def test_wandb_missing_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # import fails
    with pytest.raises(ConfigError, match=r"log.wandb='p': needs the wandb package \(pip install wandb\)"):
        writers.WandB(tmp_path, 'p', 'offline', {})


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize('tty, ci, shown', [(True, None, True), (True, 'true', False), (False, None, False)])
def test_bars_only_on_a_terminal_outside_ci(monkeypatch, tty, ci, shown):
    stream = Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, 'stderr', stream)
    monkeypatch.delenv('CI', raising=False)
    if ci:
        monkeypatch.setenv('CI', ci)
    assert progress.bars_enabled() == shown
    for _ in progress.bar(range(3), desc='work'):
        pass
    lines = io.StringIO()
    p = progress.Progress(10, 0, enabled=True, stream=lines)
    p.restart_clock(0)
    p.report(5, {'loss': '1.0000'})
    p.close()
    assert ('work' in stream.getvalue()) == shown
    assert ('\r' in stream.getvalue()) == shown  # a bar redraws its line
    # without a bar, a log interval is one plain line
    assert (lines.getvalue().startswith('step 5/10 | loss 1.0000 | ETA')) != shown


def test_plot_draws_each_run_against_each_axis(tmp_path, tracked_run):
    workdir, _ = tracked_run
    other = tmp_path / 'other'
    loop.run(tiny_lm(**{'train.steps': 6, 'train.log_every': 2, 'train.eval_every': 3}), other)
    for x in ('steps', 'tokens', 'flops'):
        fig = plot.plot_runs({'a': workdir, 'b': other}, x, tmp_path / f'{x}.png')
        train_ax, eval_ax = fig.axes[:2]
        assert [len(line.get_xdata()) for line in train_ax.lines] == [4, 3]
        assert [len(line.get_xdata()) for line in eval_ax.lines] == [2, 2]
        assert train_ax.get_xscale() == ('linear' if x == 'steps' else 'log')
        assert (tmp_path / f'{x}.png').stat().st_size > 10_000
    records = metrics.read_jsonl(workdir / 'metrics.jsonl')
    tokens_at_6 = next(r['tokens'] for r in records if r['step'] == 6 and 'loss' in r)
    assert metrics.curves(workdir, 'tokens')['eval'][0][0] == tokens_at_6
    assert plot.main([str(workdir), str(other), '--x', 'flops', '--out', str(tmp_path / 'cli.png')]) == 0
    assert plot.main([str(tmp_path / 'missing'), '--out', str(tmp_path / 'x.png')]) == 2


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / 'summary.json'
    files.write_json(path, {'a': 1})

    def fail(*args):
        raise OSError('disk full')
    monkeypatch.setattr(os, 'replace', fail)
    with pytest.raises(OSError):
        files.write_json(path, {'a': 2})
    assert json.loads(path.read_text()) == {'a': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['summary.json']  # no temporary left behind


def test_argparse_commands_take_both_spellings():
    assert cli._dashed('--max_new_tokens=5') == '--max-new-tokens=5'
    assert cli._dashed('--top_k') == '--top-k' and cli._dashed('snake_case_value') == 'snake_case_value'
    p = cli.ArgumentParser()
    p.add_argument('--max-new-tokens', type=int)
    assert p.parse_args(['--max_new_tokens', '7']).max_new_tokens == 7
    assert p.parse_args(['--max-new-tokens=8']).max_new_tokens == 8


@pytest.mark.slow
@pytest.mark.parametrize('flag', ['--cpu-devices=8', '--cpu_devices=8'])
def test_absl_commands_take_both_spellings(tmp_path, flag):
    env = {**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)}
    for dry_run in ('--dry-run', '--dry_run'):
        out = subprocess.run([sys.executable, '-m', 'scalelab.sweep', '--config', 'experiments/sweep_lm_params.py',
                              f'--workdir={tmp_path}', dry_run, flag], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert 'points (N = ' in out.stdout
