"""Compute multipliers: how much compute one recipe saves over another at equal loss.

Each table's compute-efficient frontier (the runs no cheaper run beats) is fitted with
L(C) = E + A C^-alpha. At a loss L both frontiers reach, recipe A needs C_A(L) and recipe B
C_B(L) = (A_B / (L - E_B))^(1/alpha_B); B's effective compute multiplier over A is
C_A(L) / C_B(L) (> 1: B reaches the loss with less compute). It is read only inside the loss
range both tables cover, at its two ends and its middle, with a bootstrap interval from
resampling each table's runs. Tables are compared on one metric; when their tokenizers
differ, that must be bits per byte (a loss per token is not comparable across tokenizers).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from scalelab.science import scaling
from scalelab.sweep import checks

PER_BYTE = ('bits_per_byte', 'eval_bits_per_byte')


@dataclasses.dataclass(frozen=True)
class Frontier:
    C: np.ndarray
    loss: np.ndarray
    law: scaling.PowerLaw

    def compute_for(self, loss) -> np.ndarray:
        """C at which the fitted frontier reaches `loss` (nan at or below its E)."""
        loss = np.asarray(loss, float)
        gap = loss - self.law.E
        return np.where(gap > 0, (self.law.A / np.where(gap > 0, gap, 1.0)) ** (1 / self.law.alpha), np.nan)


def frontier_points(C: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Indices of the runs no cheaper (or equally cheap) run beats, in increasing C."""
    order = np.argsort(C, kind='stable')
    keep, best = [], np.inf
    for i in order:
        if loss[i] < best:
            keep.append(i)
            best = loss[i]
    return np.array(keep, int)


def fit_frontier(C, loss, starts=None) -> Frontier:
    C, loss = np.asarray(C, float), np.asarray(loss, float)
    on = frontier_points(C, loss)
    if len(on) < 3:
        raise ValueError(f'compare: {len(on)} runs on the compute frontier; a law L(C) = E + A C^-alpha needs 3')
    law, _ = scaling.fit_power_law(C[on], loss[on], starts=starts)
    return Frontier(C[on], loss[on], law)


def multiplier(a: Frontier, b: Frontier, loss) -> np.ndarray:
    """B's effective compute multiplier over A at `loss`: C_A(loss) / C_B(loss)."""
    return a.compute_for(loss) / b.compute_for(loss)


def common_losses(a: Frontier, b: Frontier, points: int = 3) -> np.ndarray:
    """`points` losses across the range both frontiers' runs cover (geometrically spaced)."""
    low, high = max(a.loss.min(), b.loss.min()), min(a.loss.max(), b.loss.max())
    if not high > low:
        raise ValueError(f'compare: the two tables reach no common loss: A spans [{a.loss.min():.4g}, '
                         f'{a.loss.max():.4g}], B [{b.loss.min():.4g}, {b.loss.max():.4g}]')
    return np.geomspace(high, low, points)


def compare(table_a: dict, table_b: dict, *, bootstrap: int, seed: int = 0,
            level: float = 0.9) -> tuple[dict, tuple[Frontier, Frontier]]:
    """The report ({'levels': [{loss, C_A, C_B, multiplier, lo, hi}], 'frontiers', 'warnings'})
    and the two fitted frontiers."""
    a, b = (fit_frontier(t['C'], t['loss']) for t in (table_a, table_b))
    losses = common_losses(a, b)
    report = {'frontiers': {name: {'formula': f.law.describe('C'), 'params': f.law.params(), 'runs': len(f.C),
                                   'C': f.C.tolist(), 'loss': f.loss.tolist()} for name, f in (('A', a), ('B', b))},
              'warnings': []}
    for name, f in (('A', a), ('B', b)):
        report['warnings'] += [f'{name}: {w}' for w in checks.degrees_of_freedom(len(f.C), 3, 'frontier')
                               + checks.bounds(f.law) + checks.exponents(f.law.params())]
    rng = np.random.default_rng(seed)
    draws, failed = [], 0
    starts = np.array([[np.log(f.law.A), f.law.alpha, np.log(max(f.law.E, 1e-12))] for f in (a, b)])
    for _ in range(bootstrap):
        try:
            pair = [fit_frontier(t['C'][pick], t['loss'][pick], starts=starts)
                    for t, pick in ((t, rng.integers(0, len(t['C']), len(t['C']))) for t in (table_a, table_b))]
        except (ValueError, RuntimeError):
            failed += 1
            continue
        draws.append(multiplier(*pair, losses))
    if failed:
        report['warnings'] += checks.bootstrap({}, {}, bootstrap, failed)
    report['levels'] = []
    draws = np.array(draws) if draws else np.empty((0, len(losses)))
    for j, loss in enumerate(losses):
        entry = {'loss': float(loss), 'C_A': float(a.compute_for(loss)), 'C_B': float(b.compute_for(loss)),
                 'multiplier': float(multiplier(a, b, loss))}
        finite = draws[:, j][np.isfinite(draws[:, j])] if len(draws) else []
        if len(finite) > 1:
            entry['lo'], entry['hi'] = scaling.central_interval(finite, level)
        report['levels'].append(entry)
    report.update(level=level, resamples=bootstrap, failed=failed)
    return report, (a, b)


def metric_problem(rows_a: list[dict], rows_b: list[dict], metric: str) -> str | None:
    """Why `metric` cannot compare these tables (their tokenizers differ and it is per token), or None."""
    tokenizers = [{r.get('tokenizer') for r in rows if r.get('tokenizer')} for rows in (rows_a, rows_b)]
    if metric in PER_BYTE or not all(tokenizers) or tokenizers[0] == tokenizers[1]:
        return None
    return (f'--metric={metric}: the tables\' tokenizers differ (A: {", ".join(sorted(tokenizers[0]))}; '
            f'B: {", ".join(sorted(tokenizers[1]))}), so a loss per token does not compare; use '
            f'--metric=bits_per_byte')
