"""The critical batch measured directly: how many tokens each batch size needs to reach a loss.

McCandlish et al. (2018) find steps S and examples E to reach a given loss trade off as
(S / S_min - 1)(E / E_min - 1) = 1 across batch sizes B. With S = E / B that is
E(B) = E_min (1 + B / B_crit), B_crit = E_min / S_min: a straight line in B whose intercept
over its slope is the critical batch. Below it a larger batch costs few extra examples
(steps fall almost in proportion); above it, examples grow in proportion to B. Their noise
scale B_simple (training.noise_scale) predicts B_crit; this is what checks it.
"""
from __future__ import annotations

import numpy as np


def examples_to_reach(examples: np.ndarray, loss: np.ndarray, target: float, smooth: int = 3) -> float:
    """The first logged point where the loss, averaged over `smooth` consecutive records,
    is at or below `target` (the examples at that window's last record); nan if never."""
    if len(loss) < smooth:
        return float('nan')
    running = np.convolve(loss, np.ones(smooth) / smooth, mode='valid')
    below = np.flatnonzero(running <= target)
    return float(examples[below[0] + smooth - 1]) if below.size else float('nan')


def fit_tradeoff(batch: np.ndarray, examples: np.ndarray) -> dict[str, float]:
    """E_min and B_crit of E(B) = E_min (1 + B / B_crit), by least squares on the finite
    points' relative residuals (E spans decades across batch sizes: the largest batch's
    would otherwise decide the line)."""
    batch, examples = np.asarray(batch, float), np.asarray(examples, float)
    keep = np.isfinite(examples)
    if keep.sum() < 2:
        raise ValueError(f'need examples-to-target at 2 or more batch sizes, got {int(keep.sum())}')
    slope, intercept = np.polyfit(batch[keep], examples[keep], 1, w=1.0 / examples[keep])
    b_crit = intercept / slope if slope > 0 and intercept > 0 else float('nan')
    return {'E_min': float(intercept), 'S_min': float(slope), 'B_crit': float(b_crit), 'points': int(keep.sum())}
