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

from scalelab.core import progress

HUBER_DELTA = 1e-3
MAX_EXPONENT = 5.0   # exponents are searched in [0, MAX_EXPONENT]
EXP_RANGE = 14.0     # log E and log A reach this far below log(smallest loss): exp(-14) ~ 1e-6
BOUND_TOL = 1e-6     # a parameter this close to its bound is on it
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
    at_bounds: tuple[int, ...] = ()   # indices of theta on an edge of the search box
    lower: tuple[float, ...] = ()     # the box's lower edge: which edge each of at_bounds is on


def lbfgs_batched(fun: Callable, x_SxP: np.ndarray, *, lower_P: np.ndarray | None = None,
                  upper_P: np.ndarray | None = None, memory: int = 10, max_iter: int = 2000,
                  ftol: float = 2.2e-9, gtol: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS (two-loop recursion, backtracking Armijo line search) on S independent
    problems at once: `fun` maps S x P points to S values and S x P gradients.
    The stopping rules are scipy L-BFGS-B's defaults; thousands of starts then
    cost a few hundred vectorised evaluations instead of one Python loop each.
    With bounds, steps are projected onto the box and a gradient that pushes out
    of it counts as zero (a projected method: the polish after it is exact L-BFGS-B)."""
    P = np.shape(x_SxP)[-1]
    lower_P = np.full(P, -np.inf) if lower_P is None else np.asarray(lower_P, float)
    upper_P = np.full(P, np.inf) if upper_P is None else np.asarray(upper_P, float)
    x_SxP = np.clip(np.array(x_SxP, float), lower_P, upper_P)

    def projected(x, g):  # the gradient with components that would leave the box zeroed
        return np.where(((x <= lower_P) & (g > 0)) | ((x >= upper_P) & (g < 0)), 0.0, g)

    f_S, g_SxP = fun(x_SxP)
    history = []  # (s_SxP, y_SxP, rho_S), oldest first
    active = np.isfinite(f_S) & (np.abs(projected(x_SxP, g_SxP)).max(axis=1) > gtol)
    for _ in range(max_iter):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        g = projected(x_SxP[idx], g_SxP[idx])
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
        step = np.ones(len(idx))
        f_new, g_new = np.full(len(idx), np.inf), np.zeros_like(g)
        pending = np.arange(len(idx))
        x_new = x_SxP[idx].copy()
        for _ in range(60):  # halve until Armijo's sufficient decrease holds
            x_try = np.clip(x_SxP[idx[pending]] + step[pending, None] * d[pending], lower_P, upper_P)
            f_try, g_try = fun(x_try)
            decrease = np.einsum('sp,sp->s', g[pending], x_try - x_SxP[idx[pending]])
            ok = np.isfinite(f_try) & (f_try <= f_S[idx[pending]] + 1e-4 * np.minimum(decrease, 0.0))
            f_new[pending[ok]], g_new[pending[ok]], x_new[pending[ok]] = f_try[ok], g_try[ok], x_try[ok]
            pending = pending[~ok]
            if not len(pending):
                break
            step[pending] *= 0.5
        moved = np.isfinite(f_new)
        s_full, y_full, rho_full = np.zeros_like(x_SxP), np.zeros_like(x_SxP), np.zeros(len(x_SxP))
        s_step, y_step = x_new - x_SxP[idx], g_new - g_SxP[idx]
        sy = np.einsum('sp,sp->s', s_step, y_step)
        curved = moved & (sy > 1e-12)
        s_full[idx], y_full[idx] = s_step, y_step
        rho_full[idx] = np.where(curved, 1 / np.where(curved, sy, 1.0), 0.0)  # 0: the pair is skipped
        history = [*history[1 - memory:], (s_full, y_full, rho_full)]
        improvement = np.where(moved, f_S[idx] - f_new, 0.0)
        x_SxP[idx[moved]] += s_step[moved]
        f_S[idx[moved]], g_SxP[idx[moved]] = f_new[moved], g_new[moved]
        scale = np.maximum(np.maximum(np.abs(f_S[idx]), np.abs(f_S[idx] + improvement)), 1.0)
        done = (~moved | (improvement <= ftol * scale)
                | (np.abs(projected(x_SxP[idx], g_SxP[idx])).max(axis=1) <= gtol))
        active[idx[done]] = False
    return x_SxP, f_S


# The objective is ~1e-3, and L-BFGS-B's default tolerances are relative to
# max(|f|, 1): left at their defaults, refits of resampled data stop where they start.
_POLISH = {'ftol': 1e-15, 'gtol': 1e-12, 'maxiter': 20000}


def search_bounds(log_x_KxN: np.ndarray, log_loss_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box the fit searches, for theta = (a_1..a_K, alpha_1..alpha_K, e).

    Exponents lie in [0, MAX_EXPONENT]: a law of loss falling with scale. e = log E and
    a_k = log A_k lie within EXP_RANGE (in log units) below the smallest loss: under it a
    term is below a millionth of every loss at x >= 1, i.e. it has vanished (E -> 0, A -> 0).
    Without a box, flat or pure power-law data send a term to 1e-75 and take minutes."""
    k = log_x_KxN.shape[0]
    low, high = log_loss_N.min() - EXP_RANGE, log_loss_N.max() + 1.0
    a_high = high + MAX_EXPONENT * np.maximum(log_x_KxN.max(axis=1), 0.0)
    lower = np.concatenate([np.full(k, low), np.zeros(k), [low]])
    upper = np.concatenate([a_high, np.full(k, MAX_EXPONENT), [high]])
    return lower, upper


def minimize_from_starts(log_x_KxN, log_loss_N, starts_SxP: np.ndarray, delta: float = HUBER_DELTA,
                         polish: int = 8) -> list[Optimum]:
    """L-BFGS from every start (all at once, default tolerances), then the best
    `polish` results refined by scipy's L-BFGS-B with tight tolerances; distinct optima, best
    first. Both search search_bounds' box; each optimum names the parameters left on its edge."""
    lower, upper = search_bounds(log_x_KxN, log_loss_N)
    x_SxP, f_S = lbfgs_batched(lambda theta: lse_objective(theta, log_x_KxN, log_loss_N, delta),
                               np.atleast_2d(np.asarray(starts_SxP, float)), lower_P=lower, upper_P=upper)
    finite = np.flatnonzero(np.isfinite(f_S))
    if not len(finite):
        raise RuntimeError('no start converged to a finite objective')
    best = finite[np.argsort(f_S[finite])[:polish]]
    refined = []
    for start in x_SxP[best]:
        result = minimize(lse_objective, start, args=(log_x_KxN, log_loss_N, delta), jac=True, method='L-BFGS-B',
                          bounds=list(zip(lower, upper)), options=_POLISH)
        edge = tuple(int(i) for i in np.flatnonzero((result.x - lower <= BOUND_TOL) | (upper - result.x <= BOUND_TOL)))
        refined.append(Optimum(result.x, float(result.fun), edge, tuple(float(v) for v in lower)))
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
    at_bounds: tuple[str, ...] = ()  # e.g. ('E lower',): parameters the search left on an edge of its box

    THETA = ('A', 'alpha', 'E')  # the fitted theta's entries, named

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
    at_bounds: tuple[str, ...] = ()

    THETA = ('A', 'B', 'alpha', 'beta', 'E')

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


def edges(optimum: Optimum, names: Sequence[str]) -> tuple[str, ...]:
    """'E lower', 'alpha upper', ...: the parameters an optimum left on an edge of the search box."""
    return tuple(f'{names[i]} {"lower" if optimum.theta[i] - optimum.lower[i] <= BOUND_TOL else "upper"}'
                 for i in optimum.at_bounds)


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
    return PowerLaw(float(np.exp(e)), float(np.exp(a)), float(alpha), optima[0].objective,
                    edges(optima[0], PowerLaw.THETA)), optima


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
                      optima[0].objective, edges(optima[0], Chinchilla.THETA)), optima


# --- uncertainty -------------------------------------------------------------


def bootstrap(fit: Callable, columns: Sequence[np.ndarray], optima: list[Optimum], *, n: int = 200,
              seed: int = 0, max_starts: int = 4) -> tuple[list, int]:
    """Refit on `n` resamples of the rows (with replacement), each started from
    the full fit's best distinct optima; returns the resampled laws and how many refits failed."""
    rng = np.random.default_rng(seed)
    rows = len(columns[0])
    starts = np.stack([o.theta for o in optima[:max_starts]])
    laws, failed = [], 0
    for _ in progress.bar(range(n), desc='bootstrap', unit='fit'):
        pick = rng.integers(0, rows, size=rows)
        try:
            laws.append(fit(*(np.asarray(c)[pick] for c in columns), starts=starts)[0])
        except (ValueError, RuntimeError, np.linalg.LinAlgError):
            failed += 1
    return laws, failed


def central_interval(values, level: float = 0.9) -> tuple:
    """The central `level` interval of bootstrap draws along their first axis: their
    (1 - level) / 2 and (1 + level) / 2 quantiles (floats for 1-D draws, arrays beyond)."""
    lo, hi = np.quantile(np.asarray(values, float), [(1 - level) / 2, (1 + level) / 2], axis=0)
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)


def summarize(laws: list, level: float = 0.9) -> dict[str, dict[str, float]]:
    """Mean, standard error and central interval of each parameter over bootstrap laws."""
    out = {}
    for name in laws[0].params():
        values = np.array([law.params()[name] for law in laws])
        lo, hi = central_interval(values, level)
        out[name] = {'mean': float(values.mean()), 'se': float(values.std(ddof=1)), 'lo': lo, 'hi': hi}
    return out


def prediction_interval(laws: list, *inputs, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Central `level` band of the bootstrap laws' predictions at `inputs`."""
    return central_interval(np.stack([law.predict(*inputs) for law in laws]), level)
