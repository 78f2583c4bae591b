"""scaling.png for each law: where people would rather look than read."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scalelab import scaling  # noqa: E402


def plot(fit, data: dict[str, np.ndarray], path: Path, title: str = '') -> None:
    draw = {'power': _power, 'chinchilla': _chinchilla, 'isoflop': _isoflop,
            'lr_transfer': _lr_transfer}[fit.report['law']]
    fig = draw(fit, data)
    fig.suptitle(title or fit.report['formula'], fontsize=10)
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


def _lr_transfer(fit, data):
    curves = fit.report['curves']
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), sharey=True, squeeze=False)
    for ax, (param, curve) in zip(axes[0], sorted(curves.items())):
        for i, (width, points) in enumerate(curve['points'].items()):
            lrs, losses = zip(*points)
            ax.plot(lrs, losses, 'o-', color=f'C{i}', label=f'width {width}')
            best = curve['best_lr'][width]
            ax.plot([best], [dict(points)[best]], '*', ms=14, color=f'C{i}')
        ax.set(xscale='log', xlabel='learning rate', title=f'{param}: best lr moves '
               f'{curve["best_lr_shift_decades"]:+.2f} decades')
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel('eval loss')
    return fig
