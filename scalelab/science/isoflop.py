"""Chinchilla Approach 2: IsoFLOP profiles.

Runs are grouped into compute budgets (FLOP values within `tol` decades of a budget: the
digitised or rounded values of one budget scatter). At each budget, a parabola in log N
through its runs' losses; its vertex is that budget's N_opt. Least squares of log N_opt and
log D_opt on log C give N_opt ∝ C^a and D_opt ∝ C^b. A budget is left out, with a warning,
when it has too few runs, a parabola that opens downward, or a vertex outside its runs' N
range. The vertex of a parabola is biased when the true profile is not symmetric in log N
and the budget's grid is not centred on the optimum (measured in tests/test_isoflop.py);
`offset` says where each vertex sits in its grid, and an off-centre budget is warned about.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

# |offset| above this (vertex in the outer 30% of each half of the grid) is warned about:
# on a Chinchilla-shaped profile, a grid shifted 0.3 decades off a 1-decade span moves the
# vertex by up to ~0.04 decades (tests/test_isoflop.py measures it).
OFF_CENTRE = 0.7


@dataclasses.dataclass(frozen=True)
class Budget:
    C: float               # the budget: geometric mean of its runs' C
    points: int
    N_opt: float           # the parabola's vertex (nan when it has none)
    D_opt: float
    loss_opt: float
    coefficients: tuple    # of loss in (log N - log_N_center): (c2, c1, c0)
    log_N_center: float
    log_N_range: tuple     # (min, max) of its runs' log N
    offset: float          # vertex position in the grid: -1 the smallest N, 0 the middle, +1 the largest
    left_out: str = ''     # why the budget is not in the power law ('' = it is)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class IsoFlop:
    """Per-budget parabola minima and the power laws N_opt ∝ C^a, D_opt ∝ C^b through them."""
    budgets: list[Budget]  # every budget, left-out ones included
    a: float
    N_coefficient: float   # N_opt = N_coefficient * C^a
    b: float
    D_coefficient: float
    warnings: tuple[str, ...] = ()
    unassigned: int = 0    # rows in no budget

    def optimal_allocation(self, C):
        C = np.asarray(C, float)
        return self.N_coefficient * C ** self.a, self.D_coefficient * C ** self.b

    def used(self) -> list[Budget]:
        return [b for b in self.budgets if not b.left_out]

    def describe(self) -> str:
        return f'N_opt = {self.N_coefficient:.4g} C^{self.a:.3f}, D_opt = {self.D_coefficient:.4g} C^{self.b:.3f}'

    def params(self) -> dict[str, float]:
        return {'a': self.a, 'b': self.b, 'N_coefficient': self.N_coefficient, 'D_coefficient': self.D_coefficient}


def group(C: np.ndarray, tol: float, budgets=None) -> tuple[np.ndarray, np.ndarray]:
    """(label per row, budget per label): rows within `tol` decades of a budget share it; -1 = none.

    With `budgets` given, each row joins the nearest one within tol. Otherwise budgets are
    found densest first: the row with the most unassigned rows within tol of it opens a
    budget of those rows (its C: their geometric mean), until every row has one."""
    log_C = np.log10(C)
    labels = np.full(len(C), -1)
    if budgets is not None:
        centres = np.log10(np.asarray(sorted(budgets), float))
        distance = np.abs(log_C[:, None] - centres[None, :])
        nearest = distance.argmin(axis=1)
        labels = np.where(distance[np.arange(len(C)), nearest] <= tol, nearest, -1)
        return labels, 10 ** centres
    near_RxR = np.abs(log_C[:, None] - log_C[None, :]) <= tol
    centres = []
    while (labels < 0).any():
        free = labels < 0
        counts = np.where(free, (near_RxR & free[None, :]).sum(axis=1), -1)
        seed = int(np.argmax(counts))  # the first of equals: rows keep their order
        members = near_RxR[seed] & free
        labels[members] = len(centres)
        centres.append(log_C[members].mean())
    order = np.argsort(centres)  # labels in increasing C
    return np.argsort(order)[labels], 10 ** np.array(centres)[order]  # every row has a budget here


def profile(C: float, N: np.ndarray, loss: np.ndarray, D: np.ndarray, min_points: int) -> Budget:
    """One budget's parabola in log N, its vertex, and whether it can be used."""
    log_N = np.log(N)
    centre = float(log_N.mean())  # centred for a well-conditioned fit
    low, high = float(log_N.min()), float(log_N.max())
    nan_budget = dict(C=float(C), points=len(N), N_opt=math.nan, D_opt=math.nan, loss_opt=math.nan,
                      coefficients=(), log_N_center=centre, log_N_range=(low, high), offset=math.nan)
    if len(N) < min_points or len(np.unique(log_N)) < 3:
        return Budget(**nan_budget, left_out=f'{len(np.unique(log_N))} distinct sizes, fewer than '
                                             f'the {min_points} a budget needs')
    c2, c1, c0 = np.polyfit(log_N - centre, loss, 2)
    if c2 <= 0:
        return Budget(**{**nan_budget, 'coefficients': (float(c2), float(c1), float(c0))},
                      left_out='its parabola opens downward (no minimum)')
    x_opt = -c1 / (2 * c2)
    log_N_opt = centre + x_opt
    d_slope, d_at_centre = np.polyfit(log_N - centre, np.log(D), 1)  # log D is linear in log N at fixed C
    offset = (log_N_opt - (low + high) / 2) / ((high - low) / 2)
    budget = Budget(C=float(C), points=len(N), N_opt=float(np.exp(log_N_opt)),
                    D_opt=float(np.exp(d_at_centre + d_slope * x_opt)),
                    loss_opt=float(c0 + c1 * x_opt + c2 * x_opt ** 2), coefficients=(float(c2), float(c1), float(c0)),
                    log_N_center=centre, log_N_range=(low, high), offset=float(offset))
    if not low <= log_N_opt <= high:
        return dataclasses.replace(budget, left_out=f'its vertex N={budget.N_opt:.3g} lies outside its runs\' N '
                                                    f'range [{math.exp(low):.3g}, {math.exp(high):.3g}]')
    return budget


def runs(n: int) -> str:
    return f'{n} run' + ('' if n == 1 else 's')


def fit_isoflop(N, C, loss, D=None, *, tol: float = 0.1, budgets=None, min_points: int = 5) -> IsoFlop:
    """Chinchilla Approach 2. D_opt comes from the tokens trained, `D` (log D is linear in
    log N within a budget, read at N_opt), so it holds whatever FLOP count C is; without D,
    D = C / 6N."""
    N, C, loss = (np.asarray(v, float) for v in (N, C, loss))
    D = C / (6 * N) if D is None else np.asarray(D, float)
    labels, centres = group(C, tol, budgets)
    found = []
    for label in range(len(centres)):
        rows = labels == label
        if rows.any():
            found.append(profile(float(np.exp(np.log(C[rows]).mean())), N[rows], loss[rows], D[rows], min_points))
    warnings = [f'budget C={b.C:.3g} ({runs(b.points)}) left out: {b.left_out}' for b in found if b.left_out]
    warnings += [f'budget C={b.C:.3g}: its vertex sits at {b.offset:+.2f} of its grid\'s half-width from the centre '
                 f'(|offset| > {OFF_CENTRE}): Approach 2 is biased when the grid is off-centre; add sizes on the '
                 f'{"larger" if b.offset > 0 else "smaller"} side' for b in found
                 if not b.left_out and abs(b.offset) > OFF_CENTRE]
    used = [b for b in found if not b.left_out]
    if len(used) < 2:
        raise ValueError(f'fit_isoflop: need at least 2 compute budgets with >= {min_points} sizes and a '
                         f'minimum inside their range, found {len(used)} of {len(found)} budgets (runs within '
                         f'{tol} decades of a budget share it)' + ''.join(f'; {w}' for w in warnings))
    if len(used) == 2:
        warnings.append('only 2 budgets: the exponents pass exactly through their vertices (no degrees of freedom)')
    log_C = np.log([b.C for b in used])
    a, log_kN = np.polyfit(log_C, np.log([b.N_opt for b in used]), 1)
    b, log_kD = np.polyfit(log_C, np.log([budget.D_opt for budget in used]), 1)
    return IsoFlop(found, float(a), float(np.exp(log_kN)), float(b), float(np.exp(log_kD)), tuple(warnings),
                   int((labels < 0).sum()))


def bootstrap(N, C, loss, D=None, *, n: int, seed: int, **kwargs) -> tuple[list[IsoFlop], int]:
    """Refit on `n` resamples of each budget's runs (with replacement, within the budget, so
    every budget keeps its size); returns the refits and how many failed (too few budgets)."""
    N, C, loss = (np.asarray(v, float) for v in (N, C, loss))
    D = C / (6 * N) if D is None else np.asarray(D, float)
    labels, centres = group(C, kwargs.get('tol', 0.1), kwargs.get('budgets'))
    kwargs = {**kwargs, 'budgets': centres}  # the full fit's budgets, whatever a resample holds
    groups = [np.flatnonzero(labels == label) for label in np.unique(labels[labels >= 0])]
    rng = np.random.default_rng(seed)
    fits, failed = [], 0
    for _ in range(n):
        pick = np.concatenate([rng.choice(rows, size=len(rows)) for rows in groups])
        try:
            fits.append(fit_isoflop(N[pick], C[pick], loss[pick], D[pick], **kwargs))
        except (ValueError, np.linalg.LinAlgError):
            failed += 1
    return fits, failed
