"""scaling.png for each law: where people would rather look than read."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scalelab.science import isoflop, scaling  # noqa: E402
from scalelab.training import plot as run_plots  # noqa: E402


def plot(fit, data: dict[str, np.ndarray], path: Path, title: str = '') -> list[Path]:
    """Draws the law's figure at `path` (compute_optimal: also one per approach beside it); returns the files."""
    if fit.report['law'] == 'compute_optimal':
        return _compute_optimal(fit, data, Path(path), title)
    draw = {'power': _power, 'chinchilla': _chinchilla, 'isoflop': _isoflop, 'envelope': _envelope,
            'lr_transfer': _lr_transfer, 'lr_sensitivity': _lr_sensitivity, 'task': _task,
            'hparams': _hparams}[fit.report['law']]
    _save(draw(fit, data), path, title or fit.report['formula'])
    return [Path(path)]


def _save(fig, path: Path, title: str) -> None:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _log_axes(ax, x_label: str, y_label: str, x_kind: str = 'count', y_kind: str = 'loss') -> None:
    """Log x axis, and a y axis whose ticks read as numbers: a loss as scalelab.plot.loss_axis draws it
    (never '3 x 10^0'); counts (N, D) read as 20k or 3M, FLOPs as 1e19."""
    ax.set(xscale='log', xlabel=x_label, ylabel=y_label)
    _number_axis(ax.xaxis, x_kind)
    if y_kind == 'loss':
        run_plots.loss_axis(ax, line_or_collection_values(ax))
    else:
        ax.set_yscale('log')
        _number_axis(ax.yaxis, y_kind)
    ax.grid(True, which='both', alpha=0.3)


def _number_axis(axis, kind: str) -> None:
    if kind == 'flops':
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f'{v:.0e}'.replace('e+', 'e')))
    else:
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(matplotlib.ticker.EngFormatter())
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def line_or_collection_values(ax) -> np.ndarray:
    """Every y value the axes' lines and scatters hold."""
    values = [line.get_ydata() for line in ax.get_lines()]
    values += [c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets())]
    return np.concatenate([np.asarray(v, float).ravel() for v in values]) if values else np.array([])


def _residuals(ax, x, ratio, x_label: str, colour='k') -> None:
    """measured / fitted - 1 against x, in percent, around a zero line."""
    ax.scatter(x, 100 * (np.asarray(ratio) - 1), s=12, color=colour, zorder=3)
    ax.axhline(0, color='C3', lw=1)
    ax.set(xscale='log', xlabel=x_label, ylabel='residual (%)')
    ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())
    ax.grid(True, which='both', alpha=0.3)


def metrics_vs_n(rows: list[dict], metrics, path: Path, title: str = '') -> None:
    """metrics.png: each of `metrics` (results.csv columns, e.g. eval_bleu) against N, a panel each."""
    done = [r for r in rows if r['status'] == 'completed' and r['N']]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        points = sorted((float(r['N']), float(r[metric])) for r in done if r.get(metric) not in (None, ''))
        if points:
            ax.plot(*zip(*points), 'o-', color='k')
        ax.set(xscale='log', xlabel='parameters N', ylabel=metric)
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which='both', alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _power(fit, data):
    fig, (ax, res) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True, gridspec_kw={'height_ratios': [3, 1]})
    N, loss = data['N'], data['loss']
    grid = np.geomspace(N.min() / 2, N.max() * 10, 200)
    ax.scatter(N, loss, color='k', zorder=3, label='runs')
    ax.plot(grid, fit.law.predict(grid), color='C0', label=f'fit: {fit.law.describe("N")}')
    if fit.laws:
        lo, hi = scaling.prediction_interval(fit.laws, grid, level=fit.report['bootstrap']['level'])
        ax.fill_between(grid, lo, hi, color='C0', alpha=0.2,
                        label=f'{fit.report["bootstrap"]["level"]:.0%} bootstrap band')
    if fit.law.E > loss.min() / 10:  # an E near 0 would stretch the log axis over empty decades
        ax.axhline(fit.law.E, color='C0', ls=':', lw=1, label=f'E = {fit.law.E:.3g}')
    held = fit.report.get('holdout_largest')
    if held:
        ax.plot(grid[grid <= N.max() * 1.5], fit.holdout.predict(grid[grid <= N.max() * 1.5]), color='C1',
                ls='--', lw=1, label='fit without the largest N')
        err = [[held['predicted'] - held.get('lo', held['predicted'])],
               [held.get('hi', held['predicted']) - held['predicted']]]
        ax.errorbar([held['N']], [held['predicted']], yerr=err, fmt='s', color='C1', capsize=4,
                    label=f'predicted {held["predicted"]:.3f} vs measured {held["measured"]:.3f}')
    _log_axes(ax, '', 'loss')
    ax.legend(fontsize=7, loc='upper right')
    _residuals(res, N, loss / fit.law.predict(N), 'parameters N')
    return fig


def _chinchilla(fit, data):
    """Approach 3: the runs against compute with the law's frontier, and the residuals."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    N, D, loss = data['N'], data['D'], data['loss']
    C = 6 * N * D
    points = left.scatter(C, loss, c=np.log10(N), cmap='viridis', s=14, zorder=3)
    fig.colorbar(points, ax=left, label='log10 N')
    grid = np.geomspace(C.min(), C.max() * 100, 200)
    n_opt, d_opt = fit.law.optimal_allocation(grid)
    left.plot(grid, fit.law.predict(n_opt, d_opt), color='C3', label='compute-optimal frontier of the fit')
    for row in fit.report.get('compute_optimal', [])[1:2]:  # 10x the largest budget
        if 'loss_lo' in row:
            left.errorbar([row['C']], [row['loss']], yerr=[[row['loss'] - row['loss_lo']], [row['loss_hi'] - row['loss']]],
                          fmt='*', ms=10, color='C3', capsize=4, label=f'10x the largest budget: {row["loss"]:.3f}')
    _log_axes(left, 'compute C = 6ND (FLOPs)', 'loss', x_kind='flops')
    left.legend(fontsize=7, loc='upper right')
    _residuals(right, C, loss / fit.law.predict(N, D), 'compute C = 6ND (FLOPs)')
    _number_axis(right.xaxis, 'flops')
    right.set_title('residuals: measured / fitted - 1', fontsize=9)
    return fig


def _task(fit, data):
    """The task law's two steps: bpb against compute (each run, and step 1's fit at its own N
    and D), accuracy against bpb (step 2's sigmoid); the held-out run predicted in both."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    N, D, bpb, acc = data['N'], data['D'], data['loss'], data['acc']
    C = 6 * N * D
    held = fit.report.get('holdout_largest')
    law = fit.holdout or fit.law
    rest = C < C.max() if held else np.ones(len(C), bool)
    points = left.scatter(C[rest], bpb[rest], c=np.log10(N[rest]), cmap='viridis', s=16, zorder=3,
                          label='runs (fitted)')
    fig.colorbar(points, ax=left, label='log10 N')
    left.scatter(C[rest], law.loss.predict(N[rest], D[rest]), marker='x', color='C3', s=14, zorder=4,
                 label='step 1 at each run\'s N, D' + (' (fitted without the held-out run)' if held else ''))
    right.scatter(bpb[rest], acc[rest], c=np.log10(N[rest]), cmap='viridis', s=16, zorder=3, label='runs (fitted)')
    grid = np.linspace(min(bpb.min(), held['predicted_bpb'] if held else bpb.min()) - 0.1, bpb.max() + 0.1, 200)
    right.plot(grid, law.accuracy.predict(grid), color='C3',
               label='step 2: sigmoid' + (' (fitted without the held-out run)' if held else ''))
    if held:
        yerr = [[held['predicted_bpb'] - held.get('bpb_lo', held['predicted_bpb'])],
                [held.get('bpb_hi', held['predicted_bpb']) - held['predicted_bpb']]]
        left.errorbar([held['C']], [held['predicted_bpb']], yerr=yerr, fmt='s', color='C1', capsize=4,
                      label=f'held out: predicted {held["predicted_bpb"]:.3f}')
        left.scatter([held['C']], [held['measured_bpb']], marker='*', s=120, color='C1', zorder=5,
                     label=f'held out: measured {held["measured_bpb"]:.3f}')
        xerr = yerr
        aerr = [[held['predicted_acc'] - held.get('acc_lo', held['predicted_acc'])],
                [held.get('acc_hi', held['predicted_acc']) - held['predicted_acc']]]
        right.errorbar([held['predicted_bpb']], [held['predicted_acc']], xerr=xerr, yerr=aerr, fmt='s', color='C1',
                       capsize=4, label=f'held out: predicted {held["predicted_acc"]:.3f}')
        right.scatter([held['measured_bpb']], [held['measured_acc']], marker='*', s=120, color='C1', zorder=5,
                      label=f'held out: measured {held["measured_acc"]:.3f}')
    _log_axes(left, 'compute C = 6ND (FLOPs)', f'{fit.report["task"]} bpb', x_kind='flops')
    left.legend(fontsize=7, loc='upper right')
    right.set(xlabel=f'{fit.report["task"]} bpb (gold answer, bits per byte)', ylabel=fit.report['metric'])
    right.grid(True, alpha=0.3)
    right.legend(fontsize=7, loc='upper right')
    return fig


def _isoflop(fit, data):
    """Approach 2: the profiles with their parabolas, the vertices against C with the power law,
    and each run's residual from its budget's parabola."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    profiles, optimum, res = axes
    budgets = fit.report['budgets']
    C_budgets = np.array([b['C'] for b in budgets])
    nearest = np.abs(np.log10(data['C'])[:, None] - np.log10(C_budgets)[None, :]).argmin(axis=1)
    for i, budget in enumerate(budgets):
        rows = (nearest == i) & (np.abs(np.log10(data['C'] / budget['C'])) <= fit.report['budget_tol_decades'])
        colour = plt.cm.viridis(i / max(len(budgets) - 1, 1))
        label = f'C = {budget["C"]:.3g}' + (' (left out)' if budget['left_out'] else '')
        profiles.scatter(data['N'][rows], data['loss'][rows], color=colour, s=12, marker='x' if budget['left_out'] else 'o')
        if budget['coefficients']:
            grid = np.linspace(*budget['log_N_range'], 50)
            profiles.plot(np.exp(grid), np.polyval(budget['coefficients'], grid - budget['log_N_center']), color=colour,
                          ls=':' if budget['left_out'] else '-', label=label)
            fitted = np.polyval(budget['coefficients'], np.log(data['N'][rows]) - budget['log_N_center'])
            _residuals(res, data['N'][rows], data['loss'][rows] / fitted, 'parameters N', colour)
        if not budget['left_out']:
            profiles.scatter([budget['N_opt']], [budget['loss_opt']], marker='*', s=90, color=colour, zorder=4,
                             edgecolor='k')
    _log_axes(profiles, 'parameters N', 'loss')
    profiles.set_title('IsoFLOP profiles (star: vertex)', fontsize=9)
    profiles.legend(fontsize=6, loc='upper right', ncol=2 if len(budgets) > 8 else 1)
    used = [b for b in budgets if not b['left_out']]
    C = np.array([b['C'] for b in used])
    grid = np.geomspace(C.min() / 2, C.max() * 10, 50)
    optimum.scatter(C, [b['N_opt'] for b in used], color='k', zorder=3, label='vertices')
    optimum.plot(grid, fit.law.optimal_allocation(grid)[0], color='C3', label=fit.law.describe().split(',')[0])
    if fit.laws:
        level = fit.report['bootstrap']['level']
        band = scaling.central_interval([law.optimal_allocation(grid)[0] for law in fit.laws], level)
        optimum.fill_between(grid, *band, color='C3', alpha=0.2, label=f'{level:.0%} bootstrap band')
    _log_axes(optimum, 'compute C (FLOPs)', 'N_opt (parameters)', x_kind='flops', y_kind='count')
    optimum.legend(fontsize=7, loc='upper left')
    res.set_title('residuals from each budget\'s parabola', fontsize=9)
    return fig


def _envelope(fit, data):
    """Approach 1: every run's curve against compute with the envelope, and N_opt along it."""
    fig, (curves, optimum) = plt.subplots(1, 2, figsize=(12, 5))
    env = fit.law
    for curve in env.curves:
        curves.plot(curve.C, curve.loss, color='0.75', lw=0.8)
    curves.plot(env.C, env.loss, color='C3', lw=2, label='envelope: the lowest loss at each C')
    _log_axes(curves, 'compute C = 6ND (FLOPs)', fit.report.get('curve_metric', 'loss'), x_kind='flops')
    curves.legend(fontsize=7, loc='upper right')
    optimum.plot(env.C, env.N, color='k', drawstyle='steps-post', label='N of the run on the envelope')
    optimum.plot(env.C, env.optimal_allocation(env.C)[0], color='C3', label=env.describe().split(',')[0])
    if fit.laws:
        level = fit.report['bootstrap']['level']
        band = scaling.central_interval([law.optimal_allocation(env.C)[0] for law in fit.laws], level)
        optimum.fill_between(env.C, *band, color='C3', alpha=0.2, label=f'{level:.0%} bootstrap band')
    _log_axes(optimum, 'compute C (FLOPs)', 'N_opt (parameters)', x_kind='flops', y_kind='count')
    optimum.legend(fontsize=7, loc='upper left')
    return fig


def _compute_optimal(fit, data, path: Path, title: str) -> list[Path]:
    """scaling.png: N_opt and D_opt against C from the three approaches, with the prediction;
    approach1.png, approach2.png, approach3.png: each approach's own figure with residuals."""
    written = []
    for name, draw in (('approach1', _envelope), ('approach2', _isoflop), ('approach3', _chinchilla)):
        target = path.parent / f'{name}.png'
        _save(draw(fit.law[name], data), target,
              f'{title}: {APPROACH_NAMES[name]}\n{fit.law[name].report["formula"]}'.strip(': '))
        written.append(target)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    prediction = fit.report['prediction']
    grid = np.geomspace(data['C'].min() / 2, prediction['C'] * 2, 60)
    for i, name in enumerate(('approach1', 'approach2', 'approach3')):
        one = fit.law[name]
        allocation = one.law.optimal_allocation(grid)
        a = [row for row in fit.report['comparison'] if row['approach'] == name][0]
        for ax, values, key in ((axes[0], allocation[0], 'a'), (axes[1], allocation[1], 'b')):
            interval = f' [{a[key + "_lo"]:.3f}, {a[key + "_hi"]:.3f}]' if key + '_lo' in a else ''
            ax.plot(grid, values, color=f'C{i}', label=f'{APPROACH_NAMES[name]}: {key} = {a[key]:.3f}{interval}')
            if one.laws:
                level = fit.report['prediction']['level']
                band = scaling.central_interval([law.optimal_allocation(grid)[0 if key == 'a' else 1]
                                                 for law in one.laws], level)
                ax.fill_between(grid, *band, color=f'C{i}', alpha=0.12)
    budgets = [b for b in fit.report['approach2']['budgets'] if not b['left_out']]
    axes[0].scatter([b['C'] for b in budgets], [b['N_opt'] for b in budgets], color='C1', edgecolor='k', zorder=4,
                    label='IsoFLOP vertices')
    axes[1].scatter([b['C'] for b in budgets], [b['D_opt'] for b in budgets], color='C1', edgecolor='k', zorder=4)
    for ax, key in ((axes[0], 'N_opt'), (axes[1], 'D_opt')):
        ax.scatter([prediction['C']], [prediction[key]], marker='*', s=160, color='C3', edgecolor='k', zorder=5,
                   label=f'prediction at C = {prediction["C"]:.3g}: {prediction[key]:.3g}')
        verified = fit.report.get('verification')
        if verified:
            ax.scatter([verified['C']], [verified[key.replace('_opt', '')]], marker='D', s=60, color='w',
                       edgecolor='k', zorder=6, label='trained')
        _log_axes(ax, 'compute C (FLOPs)', f'{key} ({"parameters" if key == "N_opt" else "tokens"})',
                  x_kind='flops', y_kind='count')
        ax.legend(fontsize=7, loc='upper left')
    _save(fig, path, title or 'compute-optimal allocation: Chinchilla\'s three approaches')
    return [path, *written]


APPROACH_NAMES = {'approach1': 'Approach 1 (envelope)', 'approach2': 'Approach 2 (IsoFLOP)',
                  'approach3': 'Approach 3 (parametric)'}


def compare(report: dict, frontiers, path: Path) -> None:
    """compare.png: both recipes' compute frontiers with their laws, and B's compute multiplier
    over A against the loss where both hold, with its bootstrap interval."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for i, (name, frontier) in enumerate(zip('AB', frontiers)):
        grid = np.geomspace(frontier.C.min() / 2, frontier.C.max() * 2, 100)
        left.scatter(frontier.C, frontier.loss, color=f'C{i}', zorder=3, s=16)
        left.plot(grid, frontier.law.predict(grid), color=f'C{i}',
                  label=f'{name}: {report[name.lower()]}\n{frontier.law.describe("C")}')
    for level in report['levels']:
        left.plot([level['C_B'], level['C_A']], [level['loss']] * 2, color='k', lw=1, ls=':')
    _log_axes(left, 'compute C = 6ND (FLOPs)', report['metric'], x_kind='flops')
    left.legend(fontsize=7, loc='upper right')
    levels = report['levels']
    losses = [lv['loss'] for lv in levels]
    right.plot(losses, [lv['multiplier'] for lv in levels], 'o-', color='k', label='B\'s compute multiplier over A')
    if all('lo' in lv for lv in levels):
        right.fill_between(losses, [lv['lo'] for lv in levels], [lv['hi'] for lv in levels], color='k', alpha=0.15,
                           label=f'{report["level"]:.0%} bootstrap interval')
    right.axhline(1.0, color='C3', lw=1)
    right.set(xlabel=f'{report["metric"]} (where both recipes reach it)', ylabel='C_A / C_B', yscale='log')
    right.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f'{v:.3g}'))
    right.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f'{v:.3g}'))
    right.grid(True, which='both', alpha=0.3)
    right.legend(fontsize=7, loc='best')
    _save(fig, path, f'compute multiplier: {report["metric"]}')


def _width_colours(widths):
    """Narrow to wide as light to dark, as in Tensor Programs V's figures."""
    return {w: plt.cm.viridis_r(0.15 + 0.8 * i / max(len(widths) - 1, 1)) for i, w in enumerate(widths)}


def _lr_transfer(fit, data):
    """Tensor Programs V, Figure 1: loss against log2 learning rate, a curve per width
    (seed mean, standard-error bars), the fitted optimum starred; SP left, muP right."""
    curves = fit.report['curves']
    order = sorted(curves, key=lambda p: p != 'standard')
    fig, axes = plt.subplots(1, len(order), figsize=(6 * len(order), 4.6), sharey=True, squeeze=False)
    lows, highs = [], []
    colours = _width_colours(sorted({w for c in curves.values() for w in c['widths']}, key=int))  # one per width
    for ax, param in zip(axes[0], order):
        curve = curves[param]
        for width, c in sorted(curve['widths'].items(), key=lambda kv: int(kv[0])):
            lrs, mean, se = (np.array(v) for v in zip(*c['points']))
            ax.errorbar(np.log2(lrs), mean, yerr=se, fmt='o-', ms=4, capsize=2, color=colours[width],
                        label=f'width {width}' + (' (optimum at grid edge)' if c['at_edge'] else ''))
            best = c['log10_best_lr'] * math.log2(10)
            finite = np.isfinite(mean)
            ax.plot([best], [np.interp(best, np.log2(lrs)[finite], mean[finite])], '*', ms=13,
                    color=colours[width], markeredgecolor='k', zorder=5)
            lows.append(np.nanmin(mean))
            highs.append(np.nanmax(mean))
        name = {'standard': 'Standard parametrization', 'mup': 'muP'}.get(param, param)
        shift = round(curve['best_lr_shift_decades'], 2) + 0.0  # no '-0.00'
        ax.set_title(f'{name}: optimum moves {shift:+.2f} decades\n'
                     f'(range {curve["best_lr_range_decades"]:.2f}; star = parabola vertex)', fontsize=10)
        ax.set_xlabel('log2 learning rate')
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    low = min(lows)
    axes[0][0].set_ylim(low - 0.05, min(max(highs), low + 1.2) + 0.05)  # a diverging edge point does not squash
    axes[0][0].set_ylabel('eval loss (mean over seeds)')
    return fig


def _hparams(fit, data: dict[str, np.ndarray]):
    """Left: each run's loss against its learning rate, a colour per budget, the budgets'
    optima marked. Middle and right: the optima against C with the power laws and their band."""
    from scalelab.sweep import hparam_laws
    fig, (runs_ax, lr_ax, batch_ax) = plt.subplots(1, 3, figsize=(15, 4.6))
    optima = [o for o in fit.report['optima'] if not o['left_out']]
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(fit.report['optima']), 1)))
    labels, _ = isoflop.group(data['C'], fit.report['budget_tol'])
    for label, color in enumerate(colors):
        rows = labels == label
        runs_ax.scatter(data['lr'][rows], data['loss'][rows], s=12 + 4 * np.log2(data['batch'][rows]), color=color,
                        alpha=0.7, label=f'C = {fit.report["optima"][label]["C"]:.2g}')
        for batch in np.unique(data['batch'][rows]):  # one curve per batch: the bowl in the rate
            same = rows & (data['batch'] == batch)
            order = np.argsort(data['lr'][same])
            runs_ax.plot(data['lr'][same][order], data['loss'][same][order], '-', color=color, alpha=0.35,
                         lw=0.5 + np.log2(batch) / 2)
    runs_ax.set(xscale='log', xlabel='learning rate', ylabel='loss',
                title='runs (a line per batch; thicker and larger: larger batch)')
    runs_ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # a narrow range labels its minor ticks
    runs_ax.legend(fontsize=7)
    C = np.array([o['C'] for o in optima])
    grid = np.geomspace(C.min() / 2, C.max() * 2, 50)
    band = hparam_laws.interval(fit.laws, grid) if fit.laws else None
    for ax, key, curve, name in ((lr_ax, 'lr_opt', fit.law.lr, 'lr'), (batch_ax, 'batch_opt', fit.law.batch, 'batch')):
        edge = np.array([bool(o['at_edge']) for o in optima])
        values = np.array([o[key] for o in optima])
        ax.plot(C[~edge], values[~edge], 'o', color='C0', label='budget optimum (surface vertex)')
        if edge.any():
            ax.plot(C[edge], values[edge], 'o', mfc='none', color='C3', label='at the grid edge (best run)')
        ax.plot(grid, curve(grid), '-', color='C1', label='power law')
        if band is not None:
            ax.fill_between(grid, *band[name], color='C1', alpha=0.2, label='bootstrap band')
        ax.set(xscale='log', yscale='log', xlabel='compute C (FLOPs)')
        ax.set_xticks(C, [f'{c:.2g}' for c in C])  # the budgets themselves: few, within a decade or two
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
    lr_ax.set(ylabel='best learning rate', title=f'lr_opt ~ C^{fit.law.lr_exponent:+.3f} (DeepSeek: -0.125)')
    batch_ax.set(ylabel='best batch', title=f'B_opt ~ C^{fit.law.batch_exponent:+.3f} (DeepSeek: +0.327)')
    return fig


def _lr_sensitivity(fit, data):
    """Wortsman et al. (2023), Figures 1 and 2 in small: final loss and the largest attention
    logit against learning rate, a panel per variant, a curve per model width."""
    variants = fit.report['variants']
    names = sorted(variants)
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 7.5), sharex=True, sharey='row',
                             squeeze=False)
    colours = _width_colours(sorted({w for v in variants.values() for w in v}, key=int))  # one per width
    for col, variant in enumerate(names):
        for width, c in sorted(variants[variant].items(), key=lambda kv: int(kv[0])):
            lrs, loss, logit = (np.array(v, float) for v in zip(*c['points']))
            label = f'width {width}: sensitivity {c["lr_sensitivity"]:.3f}'
            axes[0][col].plot(lrs, loss, 'o-', ms=4, color=colours[width], label=label)
            axes[1][col].plot(lrs, logit, 'o-', ms=4, color=colours[width])
            diverged = np.isin(lrs, c['diverged_lrs'])  # drawn at the initial loss they count as
            axes[0][col].plot(lrs[diverged], loss[diverged], 'x', color='k', ms=9, mew=2)
        axes[0][col].set_title(variant, fontsize=10)
        axes[0][col].legend(fontsize=7)
        axes[1][col].set(xscale='log', yscale='log', xlabel='learning rate')
        for ax in axes[:, col]:
            ax.grid(True, which='both', alpha=0.3)
    axes[0][0].set_ylabel('final eval loss, capped at the initial loss')
    axes[1][0].set_ylabel('largest attention logit')
    return fig


def verification(measured: dict, data: dict[str, np.ndarray], approach3: dict, curve: list[tuple[float, float]],
                 path: Path) -> None:
    """verification.png: the study's losses against C, Approach 3's compute-optimal frontier carried
    to the predicted budget, the prediction's interval, and the predicted run (its evaluations along
    the way, and the measured end)."""
    law = scaling.Chinchilla(**approach3['params'])
    C, loss = data['C'], data['loss']
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.scatter(C, loss, s=14, color='0.6', label=f'study runs ({len(loss)})')
    grid = np.geomspace(C.min() / 1.5, measured['C'] * 1.5, 80)
    ax.plot(grid, law.predict(*law.optimal_allocation(grid)), color='C0',
            label=f'Approach 3 at its optimum: {approach3["formula"].split(";")[0]}')
    ax.axhline(law.E, color='C0', ls=':', lw=1, label=f'its E = {law.E:.3f}')
    if curve:
        ax.plot(*zip(*curve), 'o-', color='C2', ms=3, lw=1,
                label='the predicted run\'s evaluations (schedule not yet annealed)')
    lo, hi = measured.get('loss_lo', measured['predicted']), measured.get('loss_hi', measured['predicted'])
    ax.errorbar([measured['C']], [measured['predicted']], yerr=[[measured['predicted'] - lo], [hi - measured['predicted']]],
                fmt='s', color='C1', capsize=5, zorder=5, label=f'predicted {measured["predicted"]:.3f} [{lo:.3f}, {hi:.3f}]')
    where = {True: ' (inside)', False: ' (outside)'}.get(measured.get('inside'), '')
    ax.scatter([measured['C']], [measured['loss']], marker='*', s=220, color='C3', edgecolor='k', zorder=6,
               label=f'measured {measured["loss"]:.4f}{where}')
    _log_axes(ax, 'compute C (FLOPs)', measured['metric'], x_kind='flops')
    ax.legend(fontsize=7, loc='upper right')
    _save(fig, path, f'prediction at C = {measured["C"]:.3g} against its run')
