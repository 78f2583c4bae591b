"""Model shapes for a parameter budget: the one tool a size sweep needs most.

Given a target count, search every depth, solve the width that hits the
target at that depth (rounded to whole heads), and keep the shape nearest to
the requested aspect ratio d_model / n_layers among those within tolerance.
"""
from __future__ import annotations

import math

import ml_collections
from ml_collections import ConfigDict

from scalelab.models import transformer
from scalelab.science import flops

COUNTS = ('non_embedding', 'total', 'with_head')  # with_head: flops.scaling_params


def default_rule() -> ConfigDict:
    return ConfigDict(dict(
        aspect_ratio=32.0,      # d_model / n_layers (Kaplan et al. find loss flat over a wide range)
        head_dim=32,            # d_model is a multiple of this; n_heads = d_model / head_dim
        ff_ratio=4.0,           # d_ff = ff_ratio * d_model, rounded to a multiple of head_dim
        count='non_embedding',  # which parameter count the target refers to
        tolerance=0.05,         # accepted relative miss of the target
        max_layers=128,
    ))


def shape_for(model_cfg, n_layers: int, d_model: int, rule) -> ConfigDict:
    cfg = ml_collections.ConfigDict(model_cfg.to_dict())
    d_ff = max(rule.head_dim, int(round(rule.ff_ratio * d_model / rule.head_dim)) * rule.head_dim)
    n_heads = d_model // rule.head_dim
    group = model_cfg.n_heads // model_cfg.n_kv_heads if model_cfg.get('n_kv_heads') else 1  # query heads per kv head
    cfg.update(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff, n_kv_heads=max(1, n_heads // group))
    return cfg


def count(model_cfg, rule) -> int:
    counts = transformer.param_counts(model_cfg)
    return flops.scaling_params(counts, model_cfg) if rule.count == 'with_head' else counts[rule.count]


def solve_transformer(target: float, model_cfg, rule) -> ConfigDict:
    """The model config (d_model, n_layers, n_heads, n_kv_heads, d_ff set) whose parameter
    count is within `rule.tolerance` of `target`, nearest the aspect ratio.

    Raises ValueError naming the target and the nearest reachable counts when
    no shape fits.
    """
    if rule.count not in COUNTS:
        raise ValueError(f'shape.count={rule.count!r}: not one of {COUNTS}')
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ValueError(f'target_params={target!r}: must be a positive number')
    candidates = []
    for n_layers in range(1, rule.max_layers + 1):
        for d_model in _widths_near(target, n_layers, model_cfg, rule):
            cfg = shape_for(model_cfg, n_layers, d_model, rule)
            n = count(cfg, rule)
            miss = abs(n / target - 1)
            candidates.append((miss, abs(math.log(d_model / n_layers / rule.aspect_ratio)), cfg, n))
    good = [c for c in candidates if c[0] <= rule.tolerance]
    if not good:
        nearest = sorted(candidates, key=lambda c: c[0])[:3]
        raise ValueError(
            f'target_params={target:.4g}: no transformer with head_dim={rule.head_dim} and at most '
            f'{rule.max_layers} layers has {rule.count} parameters within {rule.tolerance:.0%}; nearest: '
            + ', '.join(f'{c[3]:,} (d_model={c[2].d_model}, n_layers={c[2].n_layers})' for c in nearest))
    return min(good, key=lambda c: (c[1], c[0]))[2]


def _widths_near(target: float, n_layers: int, model_cfg, rule) -> list[int]:
    """Multiples of head_dim around the width whose count is `target` at this depth
    (count is increasing in width, so bisection on the multiple finds it)."""
    def n_at(multiple: int) -> int:
        return count(shape_for(model_cfg, n_layers, multiple * rule.head_dim, rule), rule)

    lo, hi = 1, 1
    while n_at(hi) < target:
        if hi > 1 << 16:
            break
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if n_at(mid) < target else (lo, mid)
    return sorted({lo * rule.head_dim, hi * rule.head_dim})
