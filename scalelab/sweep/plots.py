"""scaling.png for each law: where people would rather look than read."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scalelab import scaling  # noqa: E402


def plot(fit, data: dict[str, np.ndarray], path: Path, title: str = '') -> None:
    draw = {'power': _power, 'chinchilla': _chinchilla, 'isoflop': _isoflop,
            'lr_transfer': _lr_transfer, 'lr_sensitivity': _lr_sensitivity}[fit.report['law']]
    fig = draw(fit, data)
    fig.suptitle(title or fit.report['formula'], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


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
    fig, ax = plt.subplots(figsize=(7, 5))
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
    ax.set(xscale='log', yscale='log', xlabel='parameters N', ylabel='loss')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _chinchilla(fit, data):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    N, D, loss = data['N'], data['D'], data['loss']
    C = 6 * N * D
    points = left.scatter(C, loss, c=np.log10(N), cmap='viridis', s=14, zorder=3)
    fig.colorbar(points, ax=left, label='log10 N')
    grid = np.geomspace(C.min(), C.max() * 100, 200)
    n_opt, d_opt = fit.law.optimal_allocation(grid)
    left.plot(grid, fit.law.predict(n_opt, d_opt), color='C3', label='compute-optimal frontier')
    left.set(xscale='log', yscale='log', xlabel='compute C = 6ND (FLOPs)', ylabel='loss')
    left.legend(fontsize=8)
    left.grid(True, which='both', alpha=0.3)
    predicted = fit.law.predict(N, D)
    right.scatter(loss, predicted, s=10, color='k')
    span = [min(loss.min(), predicted.min()), max(loss.max(), predicted.max())]
    right.plot(span, span, color='C3', lw=1)
    right.set(xlabel='measured loss', ylabel='fitted loss', title='fit quality')
    right.grid(True, alpha=0.3)
    return fig


def _isoflop(fit, data):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    budgets = fit.report['budgets']
    for i, budget in enumerate(budgets):
        rows = np.abs(np.log(data['C'] / budget['C'])) <= 0.05  # the budget's own runs
        logN = np.log(data['N'][rows])
        grid = np.linspace(logN.min(), logN.max(), 50)
        left.scatter(data['N'][rows], data['loss'][rows], color=f'C{i % 10}', s=12)
        left.plot(np.exp(grid), np.polyval(budget['coefficients'], grid - budget['log_N_center']), color=f'C{i % 10}',
                  label=f'C = {budget["C"]:.2g}')
        left.scatter([budget['N_opt']], [budget['loss_opt']], marker='*', s=80, color=f'C{i % 10}', zorder=4)
    left.set(xscale='log', xlabel='parameters N', ylabel='loss', title='IsoFLOP profiles')
    left.legend(fontsize=7)
    C = np.array([b['C'] for b in budgets])
    grid = np.geomspace(C.min(), C.max() * 10, 50)
    right.scatter(C, [b['N_opt'] for b in budgets], color='k', zorder=3)
    right.plot(grid, fit.law.optimal_allocation(grid)[0], color='C3', label=fit.law.describe())
    right.set(xscale='log', yscale='log', xlabel='compute C (FLOPs)', ylabel='N_opt')
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(True, which='both', alpha=0.3)
    return fig


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
