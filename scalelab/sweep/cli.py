"""CLI: run a sweep and fit its scaling law, refit any results table, or compare two recipes.

    python -m scalelab.sweep --config experiments/sweep_lm_params.py --workdir runs/sweep
        [--dry-run] [--emit-commands] [--collect-only] [--parallel K] [--cpu-devices N]
    python -m scalelab.sweep fit --results runs/sweep/results.csv --law power|chinchilla|isoflop|compute_optimal
        [--n-col N] [--d-col D] [--c-col C] [--loss-col loss] [--drop-top-loss K] [--out DIR]
        [--budget-tol 0.1] [--budgets 1e18,3e18,...] [--min-points 5]
    python -m scalelab.sweep compare --a runs/sweep --b runs/sweep_bpe [--metric bits_per_byte] [--out DIR]
    python -m scalelab.sweep predict --workdir runs/isoflop --out prediction.json
    python -m scalelab.sweep verify --prediction prediction.json --run runs/verify --out verification.json
"""
from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from scalelab.core import cli
from scalelab.core.errors import ConfigError
from scalelab.core.files import write_json
from scalelab.science import isoflop

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep config file (path.py[:arg]).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep directory: points/<name>/ run workdirs, results.csv, '
                               'fit.json, scaling.png.')
_DRY_RUN = flags.DEFINE_bool('dry-run', False, 'List the points with parameter counts and FLOPs; train nothing.')
_EMIT = flags.DEFINE_bool('emit-commands', False, 'Print one `python -m scalelab.run ...` command per point '
                            '(and make each point\'s workdir, where a failed point records why).')
_COLLECT = flags.DEFINE_bool('collect-only', False, 'Write results.csv and the fit from what the points\' '
                              'workdirs hold; train nothing (points run elsewhere, e.g. as a SLURM array).')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Points run at once on this machine.', lower_bound=1)
_CPU_DEVICES = flags.DEFINE_integer('cpu-devices', None, 'Passed to each point (virtual CPU devices).',
                                    lower_bound=1)
_RESULTS = flags.DEFINE_string('results', None, 'fit: a CSV with columns for N, loss and D or C.')
_LAW = flags.DEFINE_enum('law', None, ['power', 'chinchilla', 'isoflop', 'compute_optimal', 'lr_transfer',
                                       'lr_sensitivity', 'task', 'hparams'],
                         'fit: the law to fit; compute_optimal: Chinchilla\'s Approaches 1, 2 and 3 side by side '
                         '(needs the sweep\'s points/); task: a downstream task\'s bpb from N and D, then its '
                         'accuracy from bpb (needs --task); hparams: the best learning rate and batch as power '
                         'laws in C (columns optim.learning_rate, train.global_batch) '
                         '(default: the sweep config\'s, or power).')
_TASK = flags.DEFINE_string('task', None, 'fit --law task: the task:variant whose downstream/ columns are fitted.')
_TASK_METRIC = flags.DEFINE_enum('task-metric', 'acc', ['acc', 'acc_per_char'], 'fit --law task: the accuracy '
                                 'that step 2 predicts from bpb.')
_N_COL = flags.DEFINE_string('n-col', 'N', 'fit: column of parameter counts.')
_D_COL = flags.DEFINE_string('d-col', 'D', 'fit: column of training tokens (else C / 6N).')
_C_COL = flags.DEFINE_string('c-col', 'C', 'fit: column of training FLOPs (else 6ND).')
_LOSS_COL = flags.DEFINE_string('loss-col', 'loss', 'fit: column of losses.')
_DROP = flags.DEFINE_integer('drop-top-loss', 0, 'fit: leave out this many highest-loss rows (outliers).')
_BUDGET_TOL = flags.DEFINE_float('budget-tol', 0.1, 'isoflop: runs within this many decades of C share a budget.')
_BUDGETS = flags.DEFINE_list('budgets', None, 'isoflop: the budgets (FLOPs, comma-separated) instead of found ones.')
_MIN_POINTS = flags.DEFINE_integer('min-points', 5, 'isoflop: runs a budget needs for its parabola.')
_A = flags.DEFINE_string('a', None, 'compare: the baseline recipe\'s sweep directory or results table.')
_B = flags.DEFINE_string('b', None, 'compare: the other recipe\'s sweep directory or results table.')
_METRIC = flags.DEFINE_string('metric', 'loss', 'compare: the column both tables are compared on '
                              '(bits_per_byte when their tokenizers differ).')
_PREDICTION = flags.DEFINE_string('prediction', None, 'verify: the prediction.json written by `predict`.')
_RUN = flags.DEFINE_string('run', None, 'verify: the workdir of the predicted run, trained.')
_BOOTSTRAP = flags.DEFINE_integer('bootstrap', None, 'Bootstrap resamples (default: the sweep config\'s, or 200).')
_OUT = flags.DEFINE_string('out', None, 'fit: directory for fit.json and scaling.png (default: beside a sweep\'s '
                           'results.csv, else runs/fit/<name of the table>).')
cli.underscore_aliases()


def fit_and_report(rows: list[dict], law: str, out_dir: Path, n_bootstrap: int, title: str = '',
                   points_dir: Path | None = None, budget_options: dict | None = None,
                   task: tuple[str, str] | None = None, **columns) -> dict:
    """Fit `law` to the rows, write fit.json and its figures to out_dir, print the law and its warnings;
    `task` = (task:variant, accuracy metric) for the task law."""
    from scalelab.sweep import compute_optimal, hparam_laws, lr_laws, plots, results, task_fit
    budget_options = budget_options or {}
    if law in lr_laws.LAWS:
        data, fit = None, results.Fit(getattr(lr_laws, law)(rows, columns.get('loss_col', 'loss')))
    elif law == 'hparams':
        dropped = []
        data = hparam_laws.table(rows, c_col=columns.get('c_col', 'C'), loss_col=columns.get('loss_col', 'loss'),
                                 dropped=dropped)
        fit = hparam_laws.fit(data, tol=budget_options.get('tol', 0.1), bootstrap=n_bootstrap, dropped=dropped)
    elif law == 'task':
        if not task or not task[0]:
            raise ValueError('--law task needs --task task:variant (a downstream/<task>/bpb column of the table)')
        columns.pop('loss_col', None)
        dropped = []
        data = task_fit.table(rows, *task, dropped, **columns)
        fit = task_fit.fit(data, *task, bootstrap=n_bootstrap, dropped=dropped)
    else:
        dropped: list = []
        data = results.table(rows, dropped=dropped, **columns)
        if law == 'compute_optimal':
            fit = compute_optimal.fit(rows, data, points_dir or Path('points'), bootstrap=n_bootstrap,
                                      dropped=dropped, n_col=columns.get('n_col', 'N'), **budget_options)
        else:
            fit = results.fit_table(data, law, bootstrap=n_bootstrap, dropped=dropped,
                                    **(budget_options if law == 'isoflop' else {}))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / 'fit.json', fit.report)
    figures = plots.plot(fit, data, out_dir / 'scaling.png', title)
    print_report(fit.report)
    print(f'wrote {out_dir / "fit.json"} and ' + ', '.join(str(f) for f in figures))
    return fit.report


def print_report(report: dict) -> None:
    """The law, its intervals and checks, as the console shows them; warnings to stderr."""
    if report['law'] == 'compute_optimal':
        return print_compute_optimal(report)
    print(f'fitted ({report["rows"]} rows): {report["formula"]}')
    for name, stats in report.get('bootstrap', {}).items():
        if isinstance(stats, dict):
            print(f'  {name:>13} = {report["params"][name]:.6g}  (bootstrap SE {stats["se"]:.3g}, '
                  f'{report["bootstrap"]["level"]:.0%} interval [{stats["lo"]:.4g}, {stats["hi"]:.4g}])')
    held = report.get('holdout_largest')
    if held and report['law'] == 'task':
        print_task_holdout(report['metric'], held)
    elif held:
        interval = f' [{held["lo"]:.4f}, {held["hi"]:.4f}]' if 'lo' in held else ''
        print(f'  largest N={held["N"]:.3g} held out: predicted {held["predicted"]:.4f}{interval}, '
              f'measured {held["measured"]:.4f} ({100 * held["relative_error"]:+.2f}%)')
    for param, curve in report.get('curves', {}).items():
        best = ', '.join(f'width {w}: {c["best_lr"]:.3g}' + (' (at the grid edge)' if c['at_edge'] else
                                                            f' (SE {c["se_decades"] or 0:.2f} decades)')
                         for w, c in curve['widths'].items())
        print(f'  {param}: best learning rate {best}; moves {curve["best_lr_shift_decades"]:+.2f} decades '
              f'narrowest to widest; wider is better near the optimum: {curve["wider_is_better"]["holds"]}')
    for variant, widths in report.get('variants', {}).items():
        print(f'  {variant}: LR sensitivity ' + ', '.join(
            f'width {w}: {c["lr_sensitivity"]:.3f}' + (f' ({len(c["diverged_lrs"])} diverged)' if c['diverged_lrs']
                                                       else '') for w, c in widths.items()))
    for optimum in report.get('optima', []):  # hparams
        state = (f'left out: {optimum["left_out"]}' if optimum['left_out'] else
                 f'lr {optimum["lr_opt"]:.3g}, batch {optimum["batch_opt"]:.3g}'
                 + (f' (the best run: {optimum["at_edge"]})' if optimum['at_edge'] else ''))
        print(f'  budget C={optimum["C"]:.3g} ({optimum["runs"]} runs): {state}')
    for budget in report.get('budgets', []):
        print(f'  budget C={budget["C"]:.3g} ({isoflop.runs(budget["points"])}): ' + (
            f'left out, {budget["left_out"]}' if budget['left_out'] else
            f'N_opt={budget["N_opt"]:.3g}, loss {budget["loss_opt"]:.4f}, vertex at {budget["offset"]:+.2f} of the grid'))
    for row in report.get('compute_optimal', []):
        interval = f' [{row["loss_lo"]:.4f}, {row["loss_hi"]:.4f}]' if 'loss_lo' in row else ''
        print(f'  C={row["C"]:.3g}: N_opt={row["N_opt"]:.3g}, D_opt={row["D_opt"]:.3g}, loss {row["loss"]:.4f}{interval}')
    print_warnings(report)


def print_task_holdout(metric: str, held: dict) -> None:
    def interval(key):
        return f' [{held[key + "_lo"]:.4f}, {held[key + "_hi"]:.4f}]' if key + '_lo' in held else ''
    print(f'  largest C={held["C"]:.3g} held out (N={held["N"]:.3g}, D={held["D"]:.3g}):')
    print(f'    bpb     predicted {held["predicted_bpb"]:.4f}{interval("bpb")}, measured {held["measured_bpb"]:.4f} '
          f'({100 * held["bpb_relative_error"]:+.2f}%)')
    print(f'    {metric:<7} predicted {held["predicted_acc"]:.4f}{interval("acc")}, measured {held["measured_acc"]:.4f} '
          f'(on {held["documents"]} documents, standard error {held["acc_measurement_se"]:.4f})')


def print_compute_optimal(report: dict) -> None:
    print(f'Chinchilla\'s three approaches on {report["rows"]} runs (intervals: '
          f'{report["prediction"]["level"]:.0%} bootstrap):')
    print(f'  {"approach":<10} {"C":>9} {"a":>22} {"b":>22} {"N_opt":>10} {"D_opt":>10} {"D/N":>8}')
    for row in report['comparison']:
        def cell(key):
            return (f'{row[key]:.3f} [{row[key + "_lo"]:.3f}, {row[key + "_hi"]:.3f}]' if key + '_lo' in row
                    else f'{row[key]:.3f}')
        print(f'  {row["approach"]:<10} {row["C"]:>9.3g} {cell("a"):>22} {cell("b"):>22} {row["N_opt"]:>10.3g} '
              f'{row["D_opt"]:>10.3g} {row["tokens_per_param"]:>8.1f}')
    p = report['prediction']
    interval = f' [{p["loss_lo"]:.4f}, {p["loss_hi"]:.4f}]' if 'loss_lo' in p else ''
    print(f'  prediction at C={p["C"]:.3g}: N_opt={p["N_opt"]:.4g}, D_opt={p["D_opt"]:.4g}, '
          f'loss {p["loss"]:.4f}{interval}')
    print_warnings(report)


def print_warnings(report: dict) -> None:
    for line in report.get('warnings', []):
        print(f'warning: {line}', file=sys.stderr)


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
                   200 if _BOOTSTRAP.value is None else _BOOTSTRAP.value, points_dir=path.parent / 'points',
                   budget_options=budget_options(_BUDGET_TOL.value, _MIN_POINTS.value, _BUDGETS.value),
                   task=(_TASK.value, _TASK_METRIC.value),
                   n_col=_N_COL.value, d_col=_D_COL.value, c_col=_C_COL.value, loss_col=_LOSS_COL.value,
                   drop_top_loss=_DROP.value)
    return 0


def budget_options(tol: float, min_points: int, budgets: list[str] | None) -> dict:
    """Approach 2's grouping, checked: a tolerance in decades, a minimum of runs, given budgets."""
    if not tol > 0:
        raise ValueError(f'--budget-tol={tol}: must be positive (decades of C either side of a budget)')
    if min_points < 3:
        raise ValueError(f'--min-points={min_points}: a parabola needs at least 3 runs')
    values = None
    if budgets:
        try:
            values = [float(b) for b in budgets]
        except ValueError:
            raise ValueError(f'--budgets={",".join(budgets)}: not a list of numbers (FLOPs, e.g. 1e18,3e18)') from None
        if not all(v > 0 for v in values):
            raise ValueError(f'--budgets={",".join(budgets)}: budgets must be positive')
    return {'tol': tol, 'min_points': min_points, 'budgets': values}


def compare_main() -> int:
    """B's effective compute multiplier over A at equal loss, with its interval and where it holds."""
    from scalelab.sweep import checks, compare, plots, results
    tables, raw = [], []
    for flag, value in (('a', _A.value), ('b', _B.value)):
        path = Path(value or '')
        path = path / 'results.csv' if path.is_dir() else path
        if not value or not path.is_file():
            raise ValueError(f'--{flag}={value or ""}: ' + ('no results table there (give a sweep directory or its '
                                                           'results.csv)' if value else 'compare needs --a and --b'))
        raw.append(results.read_csv(path))
    problem = compare.metric_problem(*raw, _METRIC.value)
    if problem:
        raise ValueError(problem)
    dropped = []
    for flag, rows in zip('ab', raw):
        left_out: list = []
        tables.append(results.table(rows, loss_col=_METRIC.value, dropped=left_out))
        dropped += [(f'{label} of --{flag}', why) for label, why in left_out]
        if 'C' not in tables[-1]:
            raise ValueError(f'--{flag}: the table has no C (or D) column to compare compute by')
    report, frontiers = compare.compare(*tables, bootstrap=200 if _BOOTSTRAP.value is None else _BOOTSTRAP.value)
    report['warnings'] = checks.dropped(dropped) + report['warnings']
    report.update(a=_A.value, b=_B.value, metric=_METRIC.value)
    out = Path(_OUT.value or Path('runs') / 'compare' / f'{Path(_A.value).stem}_vs_{Path(_B.value).stem}')
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / 'compare.json', report)
    plots.compare(report, frontiers, out / 'compare.png')
    print(f'{_METRIC.value}: B ({_B.value}) against A ({_A.value}); frontiers '
          f'A: {report["frontiers"]["A"]["formula"]}, B: {report["frontiers"]["B"]["formula"]}')
    for level in report['levels']:
        interval = f' [{level["lo"]:.3g}, {level["hi"]:.3g}]' if 'lo' in level else ''
        print(f'  at {_METRIC.value} {level["loss"]:.4f}: A needs C={level["C_A"]:.3g}, B C={level["C_B"]:.3g}: '
              f'B\'s compute multiplier {level["multiplier"]:.3g}{interval}')
    print_warnings(report)
    print(f'wrote {out / "compare.json"} and {out / "compare.png"}')
    return 0


def predict_main() -> int:
    """prediction.json: the run a sweep's compute_optimal fit predicts, with the command that trains it."""
    from scalelab.sweep import verify
    if not _WORKDIR.value or not _OUT.value:
        raise ValueError('predict needs --workdir (a sweep fitted with --law compute_optimal) and --out FILE')
    predicted = verify.prediction(Path(_WORKDIR.value))
    Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(_OUT.value), predicted)
    interval = f' [{predicted["loss_lo"]:.4f}, {predicted["loss_hi"]:.4f}]' if 'loss_lo' in predicted else ''
    print(f'predicted at C={predicted["C"]:.3g}: N_opt={predicted["N_opt"]:.4g}, D_opt={predicted["D_opt"]:.4g}, '
          f'{predicted["metric"]} {predicted["loss"]:.4f}{interval}')
    print_warnings(predicted)
    print(f'wrote {_OUT.value}; train it with:\n  {predicted["command"]}')
    return 0


def verify_main() -> int:
    """verification.json: the predicted run's measured loss against its prediction (and, with
    --workdir the study's sweep, verification.png beside it)."""
    from scalelab.core import workdir as workdir_lib
    from scalelab.sweep import verify
    if not _PREDICTION.value or not _RUN.value or not _OUT.value:
        raise ValueError('verify needs --prediction FILE, --run WORKDIR (trained) and --out FILE')
    predicted = workdir_lib.read_json(Path(_PREDICTION.value), 'write it with `python -m scalelab.sweep predict`')
    measured = verify.verification(predicted, Path(_RUN.value))
    Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(_OUT.value), measured)
    interval = (f', {"inside" if measured["inside"] else "OUTSIDE"} [{measured["loss_lo"]:.4f}, '
                f'{measured["loss_hi"]:.4f}]') if 'inside' in measured else ''
    print(f'{measured["metric"]}: predicted {measured["predicted"]:.4f}, measured {measured["loss"]:.4f} '
          f'({100 * measured["relative_error"]:+.2f}%){interval}; wrote {_OUT.value}')
    if _WORKDIR.value:
        png = Path(_OUT.value).with_suffix('.png')
        verify.figure(measured, Path(_WORKDIR.value), Path(_RUN.value), png)
        print(f'wrote {png}')
    return 0


def sweep_main() -> int:
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError('a sweep needs --config and --workdir (or use the `fit` command)')
    from scalelab.core import runtime
    runtime.configure(cpu_devices=_CPU_DEVICES.value)
    import jax

    from scalelab.science import flops
    from scalelab.sweep import points as points_lib
    from scalelab.sweep import lr_laws, results, runner
    sweep, workdir = _CONFIG.value, Path(_WORKDIR.value)
    left_out: list = []
    points = points_lib.expand(sweep, jax.device_count(), left_out)
    extra = (f'--cpu-devices={_CPU_DEVICES.value}',) if _CPU_DEVICES.value else ()

    if _EMIT.value:  # each point's workdir made, so that a point that fails where it runs records why
        for point in points:
            runner.point_dir(workdir, point).mkdir(parents=True, exist_ok=True)
            print(points_lib.shell(points_lib.run_command(sweep, point, runner.point_dir(workdir, point), extra)))
        return 0
    print(f'{len(points)} points (N = {sweep.fit.count} parameters, the count the fit uses; '
          f'{flops.FLOP_CONVENTION}):')
    print(f'{"name":<28} {"d_model":>7} {"layers":>6} {"N":>11} {"tokens":>10} {"steps":>6} {"C=6ND":>9}  done')
    for point in points:
        c, plan = point.config, point.plan
        done = runner.is_finished(runner.point_dir(workdir, point), point)
        print(f'{point.name:<28} {c.model.d_model:>7} {c.model.n_layers:>6} {plan.param_counts[sweep.fit.count]:>11,} '
              f'{plan.steps * plan.tokens_per_step:>10.3g} {plan.steps:>6} '
              f'{points_lib.planned_flops(point):>9.3g}  {"yes" if done else ""}')
    print(f'total {sum(points_lib.planned_flops(p) for p in points):.3g} FLOPs')
    if left_out:
        print(f'{len(left_out)} points left out by keep: ' + '; '.join(f'{n} ({why})' for n, why in left_out))
    if _DRY_RUN.value:
        return 0

    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / 'sweep.json', sweep.to_dict())
    outcome = {} if _COLLECT.value else runner.run(sweep, points, workdir, parallel=_PARALLEL.value,
                                                   extra_args=extra)
    rows = results.collect(sweep, points, workdir)
    if _COLLECT.value:
        outcome = {r['name']: r['status'] for r in rows}
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
        try:
            fit_and_report(rows, sweep.fit.law, workdir,
                           sweep.fit.bootstrap if _BOOTSTRAP.value is None else _BOOTSTRAP.value,
                           points_dir=workdir / 'points',
                           budget_options=budget_options(sweep.fit.budget_tol, sweep.fit.min_points, None),
                           title=f'{Path(sweep.base).stem}: {sweep.fit.metric} vs ' + (
                               'learning rate per width' if sweep.fit.law in lr_laws.LAWS
                               else 'learning rate and batch per compute budget' if sweep.fit.law == 'hparams'
                               else f'{sweep.shape.count} parameters'))
        except ValueError as e:  # the runs and results.csv stand; the table does not fit this law
            print(f'no fit: {e}', file=sys.stderr)
            for stale in ('fit.json', 'scaling.png'):  # an earlier fit's files would misreport this table
                (workdir / stale).unlink(missing_ok=True)
    else:
        print(f'{usable} completed points: not enough to fit (need 3)')
    return 1 if bad else 0


def plot_points(rows: list[dict], workdir: Path) -> None:
    """runs.png beside scaling.png: every point's loss curves against FLOPs, coloured by N."""
    import matplotlib.pyplot as plt

    from scalelab.training import plot
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
        commands = {'fit': fit_main, 'compare': compare_main, 'predict': predict_main, 'verify': verify_main}
        if len(command) == 1 and command[0] in commands:
            return commands[command[0]]()
        if command:
            raise app.UsageError(f'unknown command {" ".join(command)!r}; the commands are '
                                 f'{", ".join(f"`{c}`" for c in commands)}')
        return sweep_main()
    except (ConfigError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
