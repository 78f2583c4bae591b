"""The gradient noise scale B_simple = tr(Σ) / |G|² (McCandlish et al. 2018): about the batch
size past which doubling the batch no longer halves the steps a run needs.

|G_B|², the squared norm of a B-example mean gradient, has expectation |G|² + tr(Σ) / B,
so its value at two batch sizes gives unbiased estimates of both terms (their appendix A.1).
A step of train.microbatches = n gives both at once: each microbatch's gradient (b = B / n
examples) and their mean (B):

    |G|²  ~ (B |G_B|² - b |G_b|²) / (B - b)        tr(Σ) ~ (|G_b|² - |G_B|²) / (1 / b - 1 / B)

with |G_b|² the mean over the n microbatches. One step's estimates are noisy (|G|²'s can be
negative); a log interval's are averaged before their ratio is taken, as the paper's
exponential averages are. B_simple is in examples (sequences for an LM).
"""
from __future__ import annotations

import numpy as np

KEYS = ('gns_small_sq', 'gns_big_sq')  # the step's |G_b|² (mean over microbatches) and |G_B|²


def estimate(small_sq: float, big_sq: float, b_small: int, b_big: int) -> tuple[float, float]:
    """(|G|², tr(Σ)) from squared gradient norms at batch sizes b_small < b_big."""
    grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return grad_sq, trace


def interval(step_metrics: list[dict], global_batch: int, microbatches: int) -> dict[str, float]:
    """An interval's estimate from its steps' KEYS (none when the steps did not measure it)."""
    if KEYS[0] not in step_metrics[-1]:
        return {}
    small_sq, big_sq = (float(np.mean([v[key] for v in step_metrics])) for key in KEYS)
    grad_sq, trace = estimate(small_sq, big_sq, global_batch // microbatches, global_batch)
    return {'noise_grad_sq': grad_sq, 'noise_trace': trace,
            'noise_scale': trace / grad_sq if grad_sq > 0 else float('nan')}
