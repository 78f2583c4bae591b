"""The learning rate and batch size as power laws in compute (DeepSeek LLM 2024, section 3.1):
eta_opt(C) = a C^alpha and B_opt(C) = b C^beta, from a sweep over (learning rate, batch) at
several compute budgets.

Runs are grouped into budgets as Approach 2 groups them (isoflop.group). In each budget the
loss is fitted by a quadratic surface in (log10 lr, log10 batch); its vertex is the budget's
optimum, which falls between grid points. A surface that does not curve upward, or a vertex
outside the budget's grid, leaves the budget at its best run, flagged: the grid does not
bracket the optimum. The two power laws are straight lines in log-log through the budgets'
optima; the bootstrap resamples runs within each budget and redoes everything.
DeepSeek found alpha = -0.125 and beta = 0.327 (batch in tokens, C in their units): compare
directions and sizes, not constants.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from scalelab.science import isoflop, scaling
from scalelab.sweep import checks, results

LR, BATCH = 'optim.learning_rate', 'train.global_batch'
DEEPSEEK = {'lr_exponent': -0.125, 'batch_exponent': 0.327}
SURFACE_TERMS = 6  # 1, x, y, x^2, y^2, x y


@dataclasses.dataclass(frozen=True)
class Budget:
    C: float
    runs: int
    lr_opt: float
    batch_opt: float
    at_edge: str   # '' or why the optimum is the grid's best run
    left_out: str  # '' or why the budget takes no part in the fit


@dataclasses.dataclass(frozen=True)
class HparamLaw:
    lr_coefficient: float
    lr_exponent: float
    batch_coefficient: float
    batch_exponent: float

    def params(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def lr(self, C):
        return self.lr_coefficient * np.asarray(C, float) ** self.lr_exponent

    def batch(self, C):
        return self.batch_coefficient * np.asarray(C, float) ** self.batch_exponent


def surface_optimum(log_lr: np.ndarray, log_batch: np.ndarray, loss: np.ndarray) -> tuple[float, float, str]:
    """(log10 lr, log10 batch, '' or why it is the best run instead) of one budget's runs."""
    best = int(np.argmin(loss))
    fallback = float(log_lr[best]), float(log_batch[best])
    design = np.stack([np.ones_like(log_lr), log_lr, log_batch, log_lr ** 2, log_batch ** 2, log_lr * log_batch], 1)
    c = np.linalg.lstsq(design, loss, rcond=None)[0]
    hessian = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
    if np.any(np.linalg.eigvalsh(hessian) <= 0):
        return *fallback, 'its loss surface does not curve upward in both directions (no minimum)'
    x, y = np.linalg.solve(hessian, -c[1:3])
    for value, values, what in ((x, log_lr, 'learning rate'), (y, log_batch, 'batch')):
        if not values.min() <= value <= values.max():
            return *fallback, (f'the surface\'s minimum, {what} {10 ** value:.3g}, lies outside the grid '
                               f'[{10 ** values.min():.3g}, {10 ** values.max():.3g}]')
    return float(x), float(y), ''


def budgets(C, lr, batch, loss, *, tol: float) -> list[Budget]:
    labels, centres = isoflop.group(C, tol)
    out = []
    for label, centre in enumerate(centres):
        rows = labels == label
        runs = int(rows.sum())
        distinct = min(len(np.unique(lr[rows])), len(np.unique(batch[rows])))
        if runs < SURFACE_TERMS or distinct < 3:
            out.append(Budget(float(centre), runs, math.nan, math.nan, '',
                              f'{runs} runs with {distinct} distinct values of one hyperparameter; the surface '
                              f'needs {SURFACE_TERMS} runs and 3 values of each'))
            continue
        x, y, edge = surface_optimum(np.log10(lr[rows]), np.log10(batch[rows]), loss[rows])
        out.append(Budget(float(centre), runs, 10 ** x, 10 ** y, edge, ''))
    return out


def fit_laws(found: list[Budget]) -> HparamLaw:
    used = [b for b in found if not b.left_out]
    if len(used) < 2:
        raise ValueError(f'hparams: need 2 or more budgets with a fitted optimum, found {len(used)} of {len(found)}')
    log_C = np.log10([b.C for b in used])
    lr_exponent, lr_log = np.polyfit(log_C, np.log10([b.lr_opt for b in used]), 1)
    batch_exponent, batch_log = np.polyfit(log_C, np.log10([b.batch_opt for b in used]), 1)
    return HparamLaw(float(10 ** lr_log), float(lr_exponent), float(10 ** batch_log), float(batch_exponent))


def table(rows: list[dict], *, lr_col: str = LR, batch_col: str = BATCH, c_col: str = 'C',
          loss_col: str = 'loss', dropped: list | None = None) -> dict[str, np.ndarray]:
    """C, lr, batch and loss of the completed rows with all four finite and positive."""
    missing = [col for col in (lr_col, batch_col, c_col, loss_col) if rows and col not in rows[0]]
    if missing:
        raise ValueError(f'hparams: the table has no {", ".join(map(repr, missing))} column; columns are '
                         f'{", ".join(rows[0])}')
    out = {key: [] for key in ('C', 'lr', 'batch', 'loss')}
    for index, row in enumerate(rows):
        values = [results.number(row.get(col)) for col in (c_col, lr_col, batch_col, loss_col)]
        if row.get('status', 'completed') != 'completed' or not all(math.isfinite(v) and v > 0 for v in values):
            if dropped is not None:
                dropped.append((results.row_label(row, index), f'status {row.get("status")!r}'
                                if row.get('status', 'completed') != 'completed' else 'a missing or bad value'))
            continue
        for key, value in zip(out, values):
            out[key].append(value)
    return {key: np.array(values, float) for key, values in out.items()}


def fit(data: dict[str, np.ndarray], *, tol: float = 0.1, bootstrap: int = 200, seed: int = 0,
        level: float = 0.9, dropped: list = ()) -> results.Fit:
    found = budgets(data['C'], data['lr'], data['batch'], data['loss'], tol=tol)
    law = fit_laws(found)
    used = [b for b in found if not b.left_out]
    warnings = checks.dropped(list(dropped))
    warnings += [f'budget C={b.C:.3g} left out: {b.left_out}' for b in found if b.left_out]
    warnings += [f'budget C={b.C:.3g}: optimum at its best run ({b.at_edge}): widen the grid' for b in found
                 if b.at_edge]
    if len(used) == 2:
        warnings.append('only 2 budgets: each power law passes exactly through them (no degrees of freedom)')
    report = {
        'law': 'hparams', 'rows': int(len(data['C'])), 'budget_tol': tol,
        'formula': (f'lr_opt = {law.lr_coefficient:.4g} C^{law.lr_exponent:+.3f}, '
                    f'B_opt = {law.batch_coefficient:.4g} C^{law.batch_exponent:+.3f}'),
        'params': law.params(), 'optima': [dataclasses.asdict(b) for b in found],
        'deepseek': DEEPSEEK, 'warnings': warnings,
    }
    laws = []
    if bootstrap and len(used) > 2:
        laws, failed = resampled(data, tol, bootstrap, seed)
        laws = results.with_bootstrap(report, law, laws, failed, bootstrap, level)
    return results.Fit(report, law, laws)


def resampled(data: dict[str, np.ndarray], tol: float, n: int, seed: int) -> tuple[list[HparamLaw], int]:
    """Refits on `n` resamples of the runs within each budget; (laws, how many failed)."""
    labels, _ = isoflop.group(data['C'], tol)
    groups = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    rng = np.random.default_rng(seed)
    laws, failed = [], 0
    for _ in range(n):
        pick = np.concatenate([rng.choice(rows, size=len(rows)) for rows in groups])
        try:
            laws.append(fit_laws(budgets(*(data[k][pick] for k in ('C', 'lr', 'batch', 'loss')), tol=tol)))
        except (ValueError, np.linalg.LinAlgError):
            failed += 1
    return laws, failed


def interval(laws: list[HparamLaw], C: np.ndarray, level: float = 0.9) -> dict[str, tuple]:
    """Central bands of lr_opt and B_opt at C over the bootstrap laws (for the figure)."""
    return {'lr': scaling.central_interval(np.stack([law.lr(C) for law in laws]), level),
            'batch': scaling.central_interval(np.stack([law.batch(C) for law in laws]), level)}
