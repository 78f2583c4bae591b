"""Scaling-law fits: power law, Chinchilla Approaches 2 and 3, bootstrap, compute-optimal allocation.

Approach 3 follows Hoffmann et al. (2022) as replicated by Besiroglu et al.
(2024): minimise the summed Huber loss (delta = 1e-3) between log L and
LSE(a - alpha log N, b - beta log D, e), by L-BFGS from a grid of starts;
then E = exp(e), A = exp(a), B = exp(b). The power law L(x) = E + A x^-alpha
is the one-term case of the same objective.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import minimize

from scalelab import progress

HUBER_DELTA = 1e-3
# Hoffmann et al.'s grid of initialisations (4500 starts for Approach 3).
HOFFMANN_GRID = {
    'a': np.arange(0, 30, 5.0), 'b': np.arange(0, 30, 5.0), 'e': np.arange(-1, 1.5, 0.5),
    'alpha': np.arange(0, 2.5, 0.5), 'beta': np.arange(0, 2.5, 0.5),
}


# --- the objective -----------------------------------------------------------


def lse_objective(theta: np.ndarray, log_x_KxN: np.ndarray, log_loss_N: np.ndarray,
                  delta: float = HUBER_DELTA):
    """Summed Huber loss of log L - LSE(a_k - alpha_k log x_k ..., e) and its gradient.

    theta = (a_1..a_K, alpha_1..alpha_K, e), or S such rows at once (S values, S x P gradients).
    """
    theta_SxP = np.atleast_2d(theta)
    k = log_x_KxN.shape[0]
    a_SxK, alpha_SxK, e_S = theta_SxP[:, :k], theta_SxP[:, k:2 * k], theta_SxP[:, 2 * k]
    terms_SxJxN = np.concatenate([a_SxK[:, :, None] - alpha_SxK[:, :, None] * log_x_KxN,
                                  np.broadcast_to(e_S[:, None, None], (len(e_S), 1, log_x_KxN.shape[1]))], axis=1)
    top_SxN = terms_SxJxN.max(axis=1)
    weights_SxJxN = np.exp(terms_SxJxN - top_SxN[:, None])
    total_SxN = weights_SxJxN.sum(axis=1)
    residual_SxN = top_SxN + np.log(total_SxN) - log_loss_N
    small = np.abs(residual_SxN) <= delta
    value_S = np.where(small, 0.5 * residual_SxN ** 2, delta * (np.abs(residual_SxN) - 0.5 * delta)).sum(axis=1)
    d_residual_SxN = np.where(small, residual_SxN, delta * np.sign(residual_SxN)) / total_SxN
    d_terms_SxJ = np.einsum('sjn,sn->sj', weights_SxJxN, d_residual_SxN)       # d/d a_k and d/d e
    d_alpha_SxK = -np.einsum('skn,kn,sn->sk', weights_SxJxN[:, :k], log_x_KxN, d_residual_SxN)
    grad_SxP = np.concatenate([d_terms_SxJ[:, :k], d_alpha_SxK, d_terms_SxJ[:, k:]], axis=1)
    if np.ndim(theta) == 1:
        return float(value_S[0]), grad_SxP[0]
    return value_S, grad_SxP


@dataclasses.dataclass(frozen=True)
class Optimum:
    theta: np.ndarray
    objective: float


def lbfgs_batched(fun: Callable, x_SxP: np.ndarray, *, memory: int = 10, max_iter: int = 2000,
                  ftol: float = 2.2e-9, gtol: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS (two-loop recursion, backtracking Armijo line search) on S independent
    problems at once: `fun` maps S x P points to S values and S x P gradients.
    The stopping rules are scipy L-BFGS-B's defaults; thousands of starts then
    cost a few hundred vectorised evaluations instead of one Python loop each."""
    x_SxP = np.array(x_SxP, float)
    f_S, g_SxP = fun(x_SxP)
    history = []  # (s_SxP, y_SxP, rho_S), oldest first
    active = np.isfinite(f_S) & (np.abs(g_SxP).max(axis=1) > gtol)
    for _ in range(max_iter):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        g = g_SxP[idx]
        q, alphas = g.copy(), []
        for s, y, rho in reversed(history):
            alpha = rho[idx] * np.einsum('sp,sp->s', s[idx], q)
            q -= alpha[:, None] * y[idx]
            alphas.append(alpha)
        if history:
            s, y, rho = history[-1]
            yy = np.einsum('sp,sp->s', y[idx], y[idx])
            gamma = np.where((rho[idx] > 0) & (yy > 0), 1 / np.maximum(rho[idx] * yy, 1e-300), 1.0)
        else:  # first step: unit length along -g
            gamma = 1 / np.maximum(np.linalg.norm(g, axis=1), 1.0)
        r = gamma[:, None] * q
        for (s, y, rho), alpha in zip(history, reversed(alphas)):
            beta = rho[idx] * np.einsum('sp,sp->s', y[idx], r)
            r += (alpha - beta)[:, None] * s[idx]
        d = -r
        slope = np.einsum('sp,sp->s', g, d)
        d = np.where((slope < 0)[:, None], d, -g)  # not a descent direction: steepest descent
        slope = np.einsum('sp,sp->s', g, d)
        step = np.ones(len(idx))
        f_new, g_new = np.full(len(idx), np.inf), np.zeros_like(g)
        pending = np.arange(len(idx))
        for _ in range(60):  # halve until Armijo's sufficient decrease holds
            f_try, g_try = fun(x_SxP[idx[pending]] + step[pending, None] * d[pending])
            ok = np.isfinite(f_try) & (f_try <= f_S[idx[pending]] + 1e-4 * step[pending] * slope[pending])
            f_new[pending[ok]], g_new[pending[ok]] = f_try[ok], g_try[ok]
            pending = pending[~ok]
            if not len(pending):
                break
            step[pending] *= 0.5
        moved = np.isfinite(f_new)
        s_full, y_full, rho_full = np.zeros_like(x_SxP), np.zeros_like(x_SxP), np.zeros(len(x_SxP))
        s_step, y_step = step[:, None] * d, g_new - g
        sy = np.einsum('sp,sp->s', s_step, y_step)
        curved = moved & (sy > 1e-12)
        s_full[idx], y_full[idx] = s_step, y_step
        rho_full[idx] = np.where(curved, 1 / np.where(curved, sy, 1.0), 0.0)  # 0: the pair is skipped
        history = [*history[1 - memory:], (s_full, y_full, rho_full)]
        improvement = np.where(moved, f_S[idx] - f_new, 0.0)
        x_SxP[idx[moved]] += s_step[moved]
        f_S[idx[moved]], g_SxP[idx[moved]] = f_new[moved], g_new[moved]
        scale = np.maximum(np.maximum(np.abs(f_S[idx]), np.abs(f_S[idx] + improvement)), 1.0)
        done = ~moved | (improvement <= ftol * scale) | (np.abs(g_SxP[idx]).max(axis=1) <= gtol)
        active[idx[done]] = False
    return x_SxP, f_S


# The objective is ~1e-3, and L-BFGS-B's default tolerances are relative to
# max(|f|, 1): left at their defaults, refits of resampled data stop where they start.
_POLISH = {'ftol': 1e-15, 'gtol': 1e-12, 'maxiter': 20000}


def minimize_from_starts(log_x_KxN, log_loss_N, starts_SxP: np.ndarray, delta: float = HUBER_DELTA,
                         polish: int = 8) -> list[Optimum]:
    """L-BFGS from every start (all at once, default tolerances), then the best
    `polish` results refined by scipy's L-BFGS-B with tight tolerances; distinct optima, best first."""
    x_SxP, f_S = lbfgs_batched(lambda theta: lse_objective(theta, log_x_KxN, log_loss_N, delta),
                               np.atleast_2d(np.asarray(starts_SxP, float)))
    finite = np.flatnonzero(np.isfinite(f_S))
    if not len(finite):
        raise RuntimeError('no start converged to a finite objective')
    best = finite[np.argsort(f_S[finite])[:polish]]
    refined = []
    for start in x_SxP[best]:
        result = minimize(lse_objective, start, args=(log_x_KxN, log_loss_N, delta), jac=True, method='L-BFGS-B',
                          options=_POLISH)
        refined.append(Optimum(result.x, float(result.fun)))
    refined.sort(key=lambda o: o.objective)
    distinct = [refined[0]]
    for o in refined[1:]:
        if all(np.max(np.abs(o.theta - d.theta)) > 1e-2 for d in distinct):
            distinct.append(o)
    return distinct


def grid(*axes: Sequence[float]) -> np.ndarray:
    return np.array(list(itertools.product(*axes)), dtype=float)


# --- laws --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """L(x) = E + A x^-alpha."""
    E: float
    A: float
    alpha: float
    objective: float = math.nan

    def predict(self, x):
        return self.E + self.A * np.asarray(x, float) ** -self.alpha

    def describe(self, x_name: str = 'N') -> str:
        return f'L({x_name}) = {self.E:.4g} + {self.A:.4g} / {x_name}^{self.alpha:.4f}'

    def params(self) -> dict[str, float]:
        return {'E': self.E, 'A': self.A, 'alpha': self.alpha}


@dataclasses.dataclass(frozen=True)
class Chinchilla:
    """L(N, D) = E + A / N^alpha + B / D^beta."""
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float = math.nan

    def predict(self, N, D):
        return self.E + self.A * np.asarray(N, float) ** -self.alpha + self.B * np.asarray(D, float) ** -self.beta

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def optimal_allocation(self, C):
        """Compute-optimal (N_opt, D_opt) for C = 6 N D FLOPs (Hoffmann et al. eq. 4)."""
        a, b = self.beta / (self.alpha + self.beta), self.alpha / (self.alpha + self.beta)
        C6 = np.asarray(C, float) / 6
        return self.G * C6 ** a, C6 ** b / self.G

    def describe(self) -> str:
        return (f'L(N, D) = {self.E:.4g} + {self.A:.4g} / N^{self.alpha:.4f} + {self.B:.4g} / D^{self.beta:.4f}; '
                f'N_opt ∝ C^{self.beta / (self.alpha + self.beta):.3f}, '
                f'D_opt ∝ C^{self.alpha / (self.alpha + self.beta):.3f}')

    def params(self) -> dict[str, float]:
        return {'E': self.E, 'A': self.A, 'B': self.B, 'alpha': self.alpha, 'beta': self.beta}


def _check(name: str, *arrays: np.ndarray) -> None:
    for array in arrays:
        if array.ndim != 1 or len(array) != len(arrays[0]):
            raise ValueError(f'{name}: inputs must be 1-D and of equal length')
        if not np.all(np.isfinite(array)) or np.any(array <= 0):
            raise ValueError(f'{name}: inputs must be finite and positive')


def fit_power_law(x, loss, starts: np.ndarray | None = None, delta: float = HUBER_DELTA) -> tuple[PowerLaw, list[Optimum]]:
    """Fit L = E + A x^-alpha; returns the law and all distinct optima (best first)."""
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    _check('fit_power_law', x, loss)
    if len(x) < 3:
        raise ValueError(f'fit_power_law: need at least 3 points for 3 parameters, got {len(x)}')
    if starts is None:  # (a, alpha, e)
        starts = grid(HOFFMANN_GRID['a'], HOFFMANN_GRID['alpha'], HOFFMANN_GRID['e'])
    optima = minimize_from_starts(np.log(x)[None, :], np.log(loss), starts, delta)
    a, alpha, e = optima[0].theta
    return PowerLaw(float(np.exp(e)), float(np.exp(a)), float(alpha), optima[0].objective), optima


def fit_chinchilla(N, D, loss, starts: np.ndarray | None = None,
                   delta: float = HUBER_DELTA) -> tuple[Chinchilla, list[Optimum]]:
    """Chinchilla Approach 3; returns the law and all distinct optima (best first)."""
    N, D, loss = (np.asarray(v, float) for v in (N, D, loss))
    _check('fit_chinchilla', N, D, loss)
    if len(N) < 5:
        raise ValueError(f'fit_chinchilla: need at least 5 points for 5 parameters, got {len(N)}')
    if starts is None:  # (a, b, alpha, beta, e)
        g = HOFFMANN_GRID
        starts = grid(g['a'], g['b'], g['alpha'], g['beta'], g['e'])
    optima = minimize_from_starts(np.log(np.stack([N, D])), np.log(loss), starts, delta)
    a, b, alpha, beta, e = optima[0].theta
    return Chinchilla(float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), float(alpha), float(beta),
                      optima[0].objective), optima


# --- uncertainty -------------------------------------------------------------


def bootstrap(fit: Callable, columns: Sequence[np.ndarray], optima: list[Optimum], *, n: int = 200,
              seed: int = 0, max_starts: int = 4) -> list:
    """Refit on `n` resamples of the rows (with replacement), each started from
    the full fit's best distinct optima; returns the resampled laws."""
    rng = np.random.default_rng(seed)
    rows = len(columns[0])
    starts = np.stack([o.theta for o in optima[:max_starts]])
    laws = []
    for _ in progress.bar(range(n), desc='bootstrap', unit='fit'):
        pick = rng.integers(0, rows, size=rows)
        laws.append(fit(*(np.asarray(c)[pick] for c in columns), starts=starts)[0])
    return laws


def summarize(laws: list, level: float = 0.9) -> dict[str, dict[str, float]]:
    """Mean, standard error and central interval of each parameter over bootstrap laws."""
    out = {}
    for name in laws[0].params():
        values = np.array([law.params()[name] for law in laws])
        lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
        out[name] = {'mean': float(values.mean()), 'se': float(values.std(ddof=1)),
                     'lo': float(lo), 'hi': float(hi)}
    return out


def prediction_interval(laws: list, *inputs, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Central `level` band of the bootstrap laws' predictions at `inputs`."""
    predictions = np.stack([law.predict(*inputs) for law in laws])
    return tuple(np.quantile(predictions, [(1 - level) / 2, (1 + level) / 2], axis=0))


# --- Approach 2: IsoFLOP profiles ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class IsoFlop:
    """Per-budget parabola minima and the power laws N_opt ∝ C^a, D_opt ∝ C^b through them."""
    budgets: list[dict]   # each: C, N_opt, loss_opt, coefficients (of loss in log N), points
    a: float
    N_coefficient: float  # N_opt = N_coefficient * C^a
    b: float
    D_coefficient: float

    def optimal_allocation(self, C):
        C = np.asarray(C, float)
        return self.N_coefficient * C ** self.a, self.D_coefficient * C ** self.b

    def describe(self) -> str:
        return f'N_opt = {self.N_coefficient:.4g} C^{self.a:.3f}, D_opt = {self.D_coefficient:.4g} C^{self.b:.3f}'

    def params(self) -> dict[str, float]:
        return {'a': self.a, 'b': self.b, 'N_coefficient': self.N_coefficient, 'D_coefficient': self.D_coefficient}


def group_budgets(C: np.ndarray, rel_tol: float = 0.05) -> np.ndarray:
    """Label rows whose compute agrees within `rel_tol` (log-space clustering)."""
    order = np.argsort(C)
    labels = np.empty(len(C), int)
    label, anchor = -1, None
    for i in order:
        if anchor is None or abs(math.log(C[i] / anchor)) > rel_tol:
            label, anchor = label + 1, C[i]
        labels[i] = label
    return labels


def fit_isoflop(N, C, loss, D=None, *, rel_tol: float = 0.05, min_points: int = 3) -> IsoFlop:
    """Chinchilla Approach 2: a parabola in log N per compute budget, then
    least squares of log N_opt and log D_opt on log C. D_opt comes from the
    tokens trained, `D` (log D is linear in log N within a budget, read at
    N_opt), so it holds whatever FLOP count C is; without D, D = C / 6N."""
    N, C, loss = (np.asarray(v, float) for v in (N, C, loss))
    _check('fit_isoflop', N, C, loss)
    D = C / (6 * N) if D is None else np.asarray(D, float)
    labels = group_budgets(C, rel_tol)
    budgets = []
    for label in np.unique(labels):
        rows = labels == label
        if rows.sum() < min_points:
            continue
        logN = np.log(N[rows])
        if np.ptp(logN) == 0:
            continue
        center = logN.mean()  # centred for a well-conditioned fit
        c2, c1, c0 = np.polyfit(logN - center, loss[rows], 2)
        if c2 <= 0:
            continue  # no minimum: the budget's sizes do not bracket its optimum
        x_opt = -c1 / (2 * c2)
        d_slope, d_at_center = np.polyfit(logN - center, np.log(D[rows]), 1)
        budgets.append({'C': float(np.exp(np.log(C[rows]).mean())), 'N_opt': float(np.exp(center + x_opt)),
                        'D_opt': float(np.exp(d_at_center + d_slope * x_opt)),
                        'loss_opt': float(c0 + c1 * x_opt + c2 * x_opt ** 2), 'points': int(rows.sum()),
                        'coefficients': [float(c2), float(c1), float(c0)], 'log_N_center': float(center),
                        'bracketed': bool(logN.min() < center + x_opt < logN.max())})
    if len(budgets) < 2:
        raise ValueError(f'fit_isoflop: need at least 2 compute budgets with >= {min_points} sizes and a '
                         f'minimum, found {len(budgets)} (budgets are C values within {rel_tol:.0%})')
    logC = np.log([b['C'] for b in budgets])
    logN_opt = np.log([b['N_opt'] for b in budgets])
    a, log_kN = np.polyfit(logC, logN_opt, 1)
    b, log_kD = np.polyfit(logC, np.log([budget['D_opt'] for budget in budgets]), 1)
    return IsoFlop(budgets, float(a), float(np.exp(log_kN)), float(b), float(np.exp(log_kD)))
