"""Loss against learning rate: where the optimum sits and how touchy the loss is.

Two readings of a sweep over learning rates:
- lr_transfer (Tensor Programs V, Figure 1): per parametrization and width, the
  optimum of a parabola fitted in log10(lr) to the seed-averaged loss, with a
  standard error from the seeds' own optima, and how far it moves with width;
- lr_sensitivity (Wortsman et al. 2023): per variant and model size, the mean
  over learning rates of min(loss, initial loss) minus the best loss, and the
  largest attention logit each run saw.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from scalelab.sweep import points
from scalelab.sweep.results import number

LAWS = ('lr_transfer', 'lr_sensitivity')  # the laws this module fits (sweep fit.law)
(WIDTH, LR), SEED = points.LR_LAW_AXES, 'seed'
# The parabola goes through the grid's minimum and its two neighbours: the loss is V-shaped
# in log lr, and a wider window pulls the vertex toward the flatter side.
NEAR_OPTIMUM = 0.5    # decades either side of an optimum where 'wider is better' is checked


def parabola_optimum(log_lrs: np.ndarray, losses: np.ndarray) -> tuple[float, bool]:
    """(log10 of the best learning rate, whether it sits at the grid's edge).

    The vertex of the parabola through the smallest finite loss and its two neighbours.
    An optimum at the first or last grid point is flagged (the grid does not bracket it)
    and that point returned. Otherwise the parabola always opens upward with its vertex
    between the neighbours: the smallest loss is the first of its ties, so its left
    neighbour is strictly higher and its right one no lower."""
    keep = np.isfinite(losses)
    log_lrs, losses = log_lrs[keep], losses[keep]
    if len(losses) == 0:
        return math.nan, True
    best = int(np.argmin(losses))
    if best in (0, len(losses) - 1):
        return float(log_lrs[best]), True
    a, b, _ = np.polyfit(log_lrs[best - 1:best + 2], losses[best - 1:best + 2], 2)
    return float(-b / (2 * a)), False


def _curves(rows: list[dict], loss_col: str, group_col: str) -> dict:
    """{group: {width: {lr: {seed: loss}}}} of completed, finite rows; without a `group_col`
    column (the parametrization set once, in the sweep's overrides) every row is one group."""
    missing = [col for col in (WIDTH, LR) if rows and col not in rows[0]]
    if missing:
        raise ValueError(f'the table has no {" or ".join(missing)} column: a learning-rate law needs '
                         f'{WIDTH} and {LR} as sweep axes')
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for r in rows:
        loss = number(r.get(loss_col))
        if r.get('status') == 'completed' and math.isfinite(loss):
            out[r.get(group_col) or 'all'][int(number(r[WIDTH]))][number(r[LR])][r.get(SEED) or '0'] = loss
    return out


def lr_transfer(rows: list[dict], loss_col: str = 'loss') -> dict:
    """fit.json of a learning-rate-transfer sweep (axes: model.parametrization,
    model.d_model, optim.learning_rate, and seed)."""
    curves = _curves(rows, loss_col, 'model.parametrization')
    if not curves:
        raise ValueError(f'lr_transfer: no completed rows with a finite {loss_col!r} and columns '
                         f'model.parametrization, {WIDTH}, {LR}')
    report = {'law': 'lr_transfer', 'rows': len(rows), 'formula': 'best learning rate per width: vertex of a '
              'parabola in log10(lr) fitted to the seed-averaged loss', 'curves': {}}
    for param, widths in sorted(curves.items()):
        per_width = {}
        for width, by_lr in sorted(widths.items()):
            lrs = np.array(sorted(by_lr))
            seeds = sorted({s for losses in by_lr.values() for s in losses})
            # seed x lr; a run that did not finish leaves nan, and its learning rate drops out of the mean
            grid = np.array([[by_lr[lr].get(s, math.nan) for lr in lrs] for s in seeds])
            mean = np.where(np.isfinite(grid).all(0), grid.mean(0), math.nan)
            se = grid.std(0, ddof=1) / math.sqrt(len(seeds)) if len(seeds) > 1 else np.zeros(len(lrs))
            optimum, at_edge = parabola_optimum(np.log10(lrs), mean)
            seed_optima = [parabola_optimum(np.log10(lrs), g)[0] for g in grid]
            per_width[str(width)] = {
                'log10_best_lr': optimum, 'best_lr': 10 ** optimum, 'at_edge': at_edge,
                'se_decades': float(np.std(seed_optima, ddof=1) / math.sqrt(len(seeds))) if len(seeds) > 1 else None,
                'seed_optima_log10': seed_optima, 'seeds': len(seeds),
                'points': [[float(lr), float(m), float(e)] for lr, m, e in zip(lrs, mean, se)],
            }
        optima = {w: c['log10_best_lr'] for w, c in per_width.items()}
        narrow, wide = min(per_width, key=int), max(per_width, key=int)
        report['curves'][param] = {
            'widths': per_width,
            'best_lr_shift_decades': optima[wide] - optima[narrow],  # widest minus narrowest
            'best_lr_range_decades': max(optima.values()) - min(optima.values()),
            'any_at_edge': any(c['at_edge'] for c in per_width.values()),
            'wider_is_better': _wider_is_better(per_width, np.mean(list(optima.values()))),
        }
    return report


def _wider_is_better(per_width: dict, log10_optimum: float) -> dict:
    """At each grid learning rate within NEAR_OPTIMUM decades of the optimum: does the
    seed-averaged loss fall with every step up in width?"""
    widths = sorted(per_width, key=int)
    by_lr = [{lr: m for lr, m, _ in per_width[w]['points']} for w in widths]
    checked, violations = [], []
    for lr in sorted(set(by_lr[0]).intersection(*by_lr[1:])):
        if abs(math.log10(lr) - log10_optimum) <= NEAR_OPTIMUM + 1e-9:
            losses = [curve[lr] for curve in by_lr]
            checked.append(lr)
            violations += [{'lr': lr, 'narrower': widths[i], 'wider': widths[i + 1]}
                           for i in range(len(widths) - 1) if not losses[i + 1] < losses[i]]
    return {'holds': bool(checked) and not violations, 'learning_rates': checked, 'violations': violations}


def lr_sensitivity(rows: list[dict], loss_col: str = 'loss') -> dict:
    """fit.json of a stability sweep (Wortsman et al. 2023): per variant (every axis but the
    learning rate, width and seed) and width, LR sensitivity = mean over learning rates of
    min(loss, initial loss) - best loss, where a run that diverged counts as the initial loss
    (the column uniform_loss, ln(vocabulary): a model at initialisation predicts about uniformly)."""
    variant_cols = sorted({k for r in rows for k in r if '.' in k and k not in (LR, WIDTH)})
    runs: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        variant = ', '.join(f'{k.split(".")[-1]}={r[k]}' for k in variant_cols) or 'all'
        loss = number(r.get(loss_col))
        initial = number(r.get('uniform_loss'))
        final = loss if r.get('status') == 'completed' and math.isfinite(loss) else math.inf
        runs[variant][int(number(r[WIDTH]))][number(r[LR])] = {
            'loss': min(final, initial), 'diverged': not math.isfinite(final),
            'attn_logit_max': number(r.get('attn_logit_max'))}
    if not runs:
        raise ValueError(f'lr_sensitivity: no rows with columns {WIDTH} and {LR}')
    report = {'law': 'lr_sensitivity', 'rows': len(rows), 'formula': 'LR sensitivity = mean over lr of '
              'min(loss, initial loss) - min over lr of loss (Wortsman et al. 2023)', 'variants': {}}
    for variant, widths in sorted(runs.items()):
        report['variants'][variant] = {}
        for width, by_lr in sorted(widths.items()):
            capped = np.array([by_lr[lr]['loss'] for lr in sorted(by_lr)])
            report['variants'][variant][str(width)] = {
                'lr_sensitivity': float(np.mean(capped) - np.min(capped)),
                'best_loss': float(np.min(capped)),
                'best_lr': float(sorted(by_lr)[int(np.argmin(capped))]),
                'diverged_lrs': [lr for lr in sorted(by_lr) if by_lr[lr]['diverged']],
                'points': [[lr, by_lr[lr]['loss'], by_lr[lr]['attn_logit_max']] for lr in sorted(by_lr)],
            }
    return report
