"""CLI: run a sweep and fit its scaling law, or refit any results table.

    python -m scalelab.sweep --config experiments/sweep_lm_params.py --workdir runs/sweep
        [--dry-run] [--emit-commands] [--parallel K] [--cpu-devices N]
    python -m scalelab.sweep fit --results runs/sweep/results.csv --law power|chinchilla|isoflop
        [--n-col N] [--d-col D] [--c-col C] [--loss-col loss] [--drop-top-loss K] [--out DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from scalelab import cli
from scalelab.errors import ConfigError
from scalelab.files import write_json

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep config file (path.py[:arg]).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep directory: points/<name>/ run workdirs, results.csv, '
                               'fit.json, scaling.png.')
_DRY_RUN = flags.DEFINE_bool('dry-run', False, 'List the points with parameter counts and FLOPs; train nothing.')
_EMIT = flags.DEFINE_bool('emit-commands', False, 'Print one `python -m scalelab.run ...` command per point.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Points run at once on this machine.')
_CPU_DEVICES = flags.DEFINE_integer('cpu-devices', None, 'Passed to each point (virtual CPU devices).')
_RESULTS = flags.DEFINE_string('results', None, 'fit: a CSV with columns for N, loss and D or C.')
_LAW = flags.DEFINE_enum('law', None, ['power', 'chinchilla', 'isoflop', 'lr_transfer', 'lr_sensitivity'],
                         'fit: the law to fit '
                         '(default: the sweep config\'s, or power).')
_N_COL = flags.DEFINE_string('n-col', 'N', 'fit: column of parameter counts.')
_D_COL = flags.DEFINE_string('d-col', 'D', 'fit: column of training tokens (else C / 6N).')
_C_COL = flags.DEFINE_string('c-col', 'C', 'fit: column of training FLOPs (else 6ND).')
_LOSS_COL = flags.DEFINE_string('loss-col', 'loss', 'fit: column of losses.')
_DROP = flags.DEFINE_integer('drop-top-loss', 0, 'fit: leave out this many highest-loss rows (outliers).')
_BOOTSTRAP = flags.DEFINE_integer('bootstrap', None, 'Bootstrap resamples (default: the sweep config\'s, or 200).')
_OUT = flags.DEFINE_string('out', None, 'fit: directory for fit.json and scaling.png (default: beside a sweep\'s '
                           'results.csv, else runs/fit/<name of the table>).')
cli.underscore_aliases()


def fit_and_report(rows: list[dict], law: str, out_dir: Path, n_bootstrap: int, title: str = '', **columns) -> dict:
    from scalelab.sweep import lr_laws, plots, results
    if law in lr_laws.LAWS:
        data, fit = None, results.Fit(getattr(lr_laws, law)(rows, columns.get('loss_col', 'loss')))
    else:
        data = results.table(rows, **columns)
        fit = results.fit_table(data, law, bootstrap=n_bootstrap)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / 'fit.json', fit.report)
    plots.plot(fit, data, out_dir / 'scaling.png', title)
    print(f'fitted ({fit.report["rows"]} rows): {fit.report["formula"]}')
    for name, stats in fit.report.get('bootstrap', {}).items():
        if isinstance(stats, dict):
            print(f'  {name:>13} = {fit.report["params"][name]:.6g}  (bootstrap SE {stats["se"]:.3g}, '
                  f'{fit.report["bootstrap"]["level"]:.0%} interval [{stats["lo"]:.4g}, {stats["hi"]:.4g}])')
    held = fit.report.get('holdout_largest')
    if held:
        interval = f' [{held["lo"]:.4f}, {held["hi"]:.4f}]' if 'lo' in held else ''
        print(f'  largest N={held["N"]:.3g} held out: predicted {held["predicted"]:.4f}{interval}, '
              f'measured {held["measured"]:.4f} ({100 * held["relative_error"]:+.2f}%)')
    for param, curve in fit.report.get('curves', {}).items():
        best = ', '.join(f'width {w}: {c["best_lr"]:.3g}' + (' (at the grid edge)' if c['at_edge'] else
                                                            f' (SE {c["se_decades"] or 0:.2f} decades)')
                         for w, c in curve['widths'].items())
        print(f'  {param}: best learning rate {best}; moves {curve["best_lr_shift_decades"]:+.2f} decades '
              f'narrowest to widest; wider is better near the optimum: {curve["wider_is_better"]["holds"]}')
    for variant, widths in fit.report.get('variants', {}).items():
        print(f'  {variant}: LR sensitivity ' + ', '.join(
            f'width {w}: {c["lr_sensitivity"]:.3f}' + (f' ({len(c["diverged_lrs"])} diverged)' if c['diverged_lrs']
                                                       else '') for w, c in widths.items()))
    for row in fit.report.get('compute_optimal', []):
        print(f'  C={row["C"]:.3g}: N_opt={row["N_opt"]:.3g}, D_opt={row["D_opt"]:.3g}, loss {row["loss"]:.4f}')
    print(f'wrote {out_dir / "fit.json"} and {out_dir / "scaling.png"}')
    return fit.report


def default_out(results_csv: Path) -> Path:
    """Beside a sweep's own results.csv; any other table's fit goes to runs/fit/<its name>,
    not into the directory it came from (which may be the source tree)."""
    if (results_csv.parent / 'points').is_dir():
        return results_csv.parent
    return Path('runs') / 'fit' / results_csv.stem


def fit_main() -> int:
    from scalelab.sweep import results
    path = Path(_RESULTS.value or '')
    if not _RESULTS.value or not path.is_file():
        print(f'error: --results={_RESULTS.value or ""}: ' + ('no such file' if _RESULTS.value else
              'fit needs --results path.csv'), file=sys.stderr)
        return 2
    fit_and_report(results.read_csv(path), _LAW.value or 'power', Path(_OUT.value or default_out(path)),
                   200 if _BOOTSTRAP.value is None else _BOOTSTRAP.value,
                   n_col=_N_COL.value, d_col=_D_COL.value, c_col=_C_COL.value, loss_col=_LOSS_COL.value,
                   drop_top_loss=_DROP.value)
    return 0


def sweep_main() -> int:
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError('a sweep needs --config and --workdir (or use the `fit` command)')
    from scalelab import runtime
    runtime.configure(cpu_devices=_CPU_DEVICES.value)
    import jax

    from scalelab import flops
    from scalelab import data as data_lib
    from scalelab.sweep import points as points_lib
    from scalelab.sweep import lr_laws, results, runner
    sweep, workdir = _CONFIG.value, Path(_WORKDIR.value)
    points = points_lib.expand(sweep, jax.device_count())
    extra = (f'--cpu-devices={_CPU_DEVICES.value}',) if _CPU_DEVICES.value else ()

    if _EMIT.value:
        for point in points:
            print(points_lib.shell(points_lib.run_command(sweep, point, runner.point_dir(workdir, point), extra)))
        return 0
    print(f'{len(points)} points (N = {sweep.shape.count} parameters):')
    print(f'{"name":<28} {"d_model":>7} {"layers":>6} {"N":>11} {"tokens":>10} {"steps":>6} {"C=6ND":>9}  done')
    for point in points:
        c = point.config
        n = points_lib.count(c, sweep.shape.count)
        done = runner.is_finished(runner.point_dir(workdir, point), point)
        print(f'{point.name:<28} {c.model.d_model:>7} {c.model.n_layers:>6} {n:>11,} '
              f'{c.train.steps * c.train.global_batch * flops.tokens_per_example(data_lib.spec(c.data)):>10.3g} '
              f'{c.train.steps:>6} '
              f'{points_lib.planned_flops(point):>9.3g}  {"yes" if done else ""}')
    print(f'total {sum(points_lib.planned_flops(p) for p in points):.3g} FLOPs ({flops.FLOP_CONVENTION})')
    if _DRY_RUN.value:
        return 0

    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / 'sweep.json', sweep.to_dict())
    outcome = runner.run(sweep, points, workdir, parallel=_PARALLEL.value, extra_args=extra)
    rows = results.collect(sweep, points, workdir)
    results.write_csv(rows, workdir / 'results.csv')
    print(f'wrote {workdir / "results.csv"}')
    plot_points(rows, workdir)
    if sweep.fit.also:
        from scalelab.sweep import plots
        plots.metrics_vs_n(rows, sweep.fit.also, workdir / 'metrics.png',
                           f'{Path(sweep.base).stem}: against {sweep.shape.count} parameters')
        print(f'wrote {workdir / "metrics.png"}')
    bad = {name: status for name, status in outcome.items() if status not in ('completed', 'skipped (done)')}
    if bad:
        print('unfinished points: ' + '; '.join(f'{n}: {s}' for n, s in bad.items()), file=sys.stderr)
    usable = sum(1 for r in rows if r['status'] == 'completed' and r['loss'] is not None)
    if usable >= 3:
        fit_and_report(rows, sweep.fit.law, workdir,
                       sweep.fit.bootstrap if _BOOTSTRAP.value is None else _BOOTSTRAP.value,
                       title=f'{Path(sweep.base).stem}: {sweep.fit.metric} vs ' + (
                           'learning rate per width' if sweep.fit.law in lr_laws.LAWS
                           else f'{sweep.shape.count} parameters'))
    else:
        print(f'{usable} completed points: not enough to fit (need 3)')
    return 1 if bad else 0


def plot_points(rows: list[dict], workdir: Path) -> None:
    """runs.png beside scaling.png: every point's loss curves against FLOPs, coloured by N."""
    import matplotlib.pyplot as plt

    from scalelab import plot
    logged = {r['name']: workdir / 'points' / r['name'] for r in rows
              if r['N'] and (workdir / 'points' / r['name'] / 'metrics.jsonl').exists()}
    if not logged:
        return
    sizes = {r['name']: float(r['N']) for r in rows if r['name'] in logged}
    fig = plot.plot_runs(logged, 'flops', workdir / 'runs.png', title=f'{workdir.name}: every point',
                         color_by=sizes, color_label='N (parameters)')
    plt.close(fig)
    print(f'wrote {workdir / "runs.png"}')


def main(argv: list[str]) -> int:
    cli.quiet_logging()
    command = argv[1:]
    try:
        if command == ['fit']:
            return fit_main()
        if command:
            raise app.UsageError(f'unknown command {" ".join(command)!r}; the only command is `fit`')
        return sweep_main()
    except (ConfigError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    app.run(main, flags_parser=cli.parse_flags)
