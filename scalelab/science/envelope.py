"""Chinchilla Approach 1: the envelope of training curves.

Every run's loss curve is drawn against its compute C = 6 N D(t) (N with the head, D the
tokens seen so far, flops.FLOP_CONVENTION). At each C of a log-spaced grid the envelope
is the lowest loss any run reaches there; the run that reaches it gives N_opt(C), and
D_opt(C) = C / 6 N_opt. Least squares of log N_opt and log D_opt on log C give the
exponents a and b (a + b = 1 by construction). Hoffmann et al. did this with smoothed
training losses; here any logged loss serves (a sweep scored on held-out data uses its
periodic evaluations). The grid spans the runs' final budgets, where runs have finished
their own schedules, unless told otherwise.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Curve:
    name: str
    N: float
    C: np.ndarray      # compute at each logged point, increasing
    loss: np.ndarray


@dataclasses.dataclass(frozen=True)
class Envelope:
    C: np.ndarray      # the grid
    loss: np.ndarray   # the lowest loss at each C
    N: np.ndarray      # the size of the run that reaches it
    run: tuple         # its name
    a: float
    N_coefficient: float
    b: float
    D_coefficient: float
    curves: tuple = ()  # the runs' curves it was taken from

    @property
    def D(self) -> np.ndarray:
        return self.C / (6 * self.N)

    def optimal_allocation(self, C):
        C = np.asarray(C, float)
        return self.N_coefficient * C ** self.a, self.D_coefficient * C ** self.b

    def describe(self) -> str:
        return f'N_opt = {self.N_coefficient:.4g} C^{self.a:.3f}, D_opt = {self.D_coefficient:.4g} C^{self.b:.3f}'

    def params(self) -> dict[str, float]:
        return {'a': self.a, 'b': self.b, 'N_coefficient': self.N_coefficient, 'D_coefficient': self.D_coefficient}


def lowest(curves: list[Curve], C_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lowest loss, index of the curve reaching it) at each C: each curve is interpolated
    linearly in log C between its points and counts only inside its own span."""
    loss_RxG = np.full((len(curves), len(C_grid)), np.inf)
    for r, curve in enumerate(curves):
        inside = (C_grid >= curve.C[0]) & (C_grid <= curve.C[-1])
        loss_RxG[r, inside] = np.interp(np.log(C_grid[inside]), np.log(curve.C), curve.loss)
    return loss_RxG.min(axis=0), loss_RxG.argmin(axis=0)


def fit_envelope(curves: list[Curve], *, points: int = 200, C_range: tuple[float, float] | None = None) -> Envelope:
    """Approach 1 over `curves` on `points` log-spaced C values in C_range (default: from
    the smallest to the largest final C of the runs)."""
    curves = [c for c in curves if len(c.C) >= 2]
    if len(curves) < 2:
        raise ValueError(f'envelope: need at least 2 runs with 2 or more logged points, got {len(curves)}')
    finals = [c.C[-1] for c in curves]
    low, high = C_range or (min(finals), max(finals))
    if not high > low:
        raise ValueError(f'envelope: the compute range [{low:.3g}, {high:.3g}] is empty: the runs end at one budget')
    C_grid = np.geomspace(low, high, points)
    loss, best = lowest(curves, C_grid)
    reached = np.isfinite(loss)
    C_grid, loss, best = C_grid[reached], loss[reached], best[reached]
    N = np.array([curves[i].N for i in best])
    if len(np.unique(N)) < 2:
        raise ValueError(f'envelope: one run size ({N[0]:.3g}) is lowest over the whole range: no exponent')
    a, log_kN = np.polyfit(np.log(C_grid), np.log(N), 1)
    b, log_kD = np.polyfit(np.log(C_grid), np.log(C_grid / (6 * N)), 1)
    return Envelope(C_grid, loss, N, tuple(curves[i].name for i in best), float(a), float(np.exp(log_kN)),
                    float(b), float(np.exp(log_kD)), tuple(curves))


def bootstrap(curves: list[Curve], *, n: int = 200, seed: int = 0, **kwargs) -> tuple[list[Envelope], int]:
    """Refits on `n` resamples of the runs (with replacement) over the full fit's C range;
    returns the refits and how many failed."""
    full = fit_envelope(curves, **kwargs)
    kwargs = {**kwargs, 'C_range': (full.C[0], full.C[-1])}
    rng = np.random.default_rng(seed)
    fits, failed = [], 0
    for _ in range(n):
        pick = rng.integers(0, len(curves), size=len(curves))
        try:
            fits.append(fit_envelope([curves[i] for i in pick], **kwargs))
        except ValueError:
            failed += 1
    return fits, failed
