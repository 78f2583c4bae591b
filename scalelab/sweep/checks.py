"""What a fit cannot promise: the lines of fit.json's `warnings`.

Each check takes what a fit produced and returns warning strings; an empty list
means the check found nothing to say. A well-posed, noisy table passes them all.
"""
from __future__ import annotations

import numpy as np

EXPONENTS = ('alpha', 'beta', 'a', 'b')
MIN_BOOTSTRAP_SUCCESS = 0.5   # below this share of successful refits the bootstrap has failed
FLAT = 1.0                    # a law that moves the loss by less than this many residual scatters is flat

BOUND_MEANING = {
    'E lower': 'E -> 0: the data do not resolve an irreducible loss',
    'A lower': 'A -> 0: the N term vanishes',
    'B lower': 'B -> 0: the D term vanishes',
    'alpha lower': 'alpha = 0: the loss does not fall with N',
    'beta lower': 'beta = 0: the loss does not fall with D',
}


def degrees_of_freedom(points: int, params: int, law: str) -> list[str]:
    if points > params:
        return []
    return [f'{points} points for the {params} free parameters of the {law} law: it interpolates them exactly; '
            'no interval, no held-out check and no allocation can be trusted, so none is reported']


def bounds(law) -> list[str]:
    return [f'{edge.split()[0]} = {getattr(law, edge.split()[0]):.4g} is at the {edge.split()[1]} bound of its '
            f'search ({BOUND_MEANING.get(edge, "the box of the search cuts the optimum off")})'
            for edge in getattr(law, 'at_bounds', ())]


def exponents(params: dict[str, float]) -> list[str]:
    return [f'{name} = {value:.4g}: an exponent of zero or below is no scaling law'
            for name, value in params.items() if name in EXPONENTS and not value > 1e-3]


def flat(predicted_range: float, residual_scatter: float) -> list[str]:
    """A law whose predictions across the data span less than the residuals' scatter found no trend."""
    if predicted_range > FLAT * residual_scatter:
        return []
    return [f'the fitted law moves the loss by {predicted_range:.3g} across the data, less than the residuals\' '
            f'scatter ({residual_scatter:.3g}): the data show no trend the law resolves']


def bootstrap(params: dict[str, float], stats: dict[str, dict], resamples: int, failed: int) -> list[str]:
    lines = []
    if failed:
        lines.append(f'{failed} of {resamples} bootstrap refits failed' + (
            ': the bootstrap failed, no intervals are reported' if failed > (1 - MIN_BOOTSTRAP_SUCCESS) * resamples
            else ' and are left out of the intervals'))
    frozen = frozen_params(stats, params)
    if frozen:
        lines.append(f'the bootstrap cannot vary {", ".join(frozen)} (standard error 0): its intervals mean nothing '
                     'and are not reported')
    return lines


def frozen_params(stats: dict[str, dict], params: dict[str, float]) -> list[str]:
    """The quantities whose bootstrap standard error is zero: at most 1e-9 of their value (of
    1e-21 when the value is zero or not a fitted parameter)."""
    return [name for name, s in stats.items() if s['se'] <= 1e-9 * max(abs(params.get(name, 0.0)), 1e-12)]


def usable_bootstrap(resamples: int, failed: int, stats: dict[str, dict], params: dict[str, float]) -> bool:
    """Whether the bootstrap's intervals may be reported (see `bootstrap`)."""
    return failed <= (1 - MIN_BOOTSTRAP_SUCCESS) * resamples and not frozen_params(stats, params)


def dropped(rows: list[tuple[str, str]]) -> list[str]:
    return [f'row {label} left out: {reason}' for label, reason in rows]


def scatter(loss: np.ndarray, predicted: np.ndarray) -> float:
    """Root-mean-square residual, in the loss's own units."""
    return float(np.sqrt(np.mean((np.asarray(loss) - np.asarray(predicted)) ** 2)))
