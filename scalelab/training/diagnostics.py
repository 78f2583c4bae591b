"""What a log line tells beyond the loss: norms of params, grads and updates, and loss spikes.

Norms grow or collapse, and the update/param ratio drifts, before the loss
shows trouble (nanodo, levanter and big_vision log the same). They are taken
per layer group: a parameter's name (core.naming.name) up to the module under a
numbered layer ('blocks.3.attn', 'blocks.3.mlp_norm') or its top-level module
('embed', 'head'). With stacked layers (model.scan_layers) a leaf holds every
layer on its first axis; its groups are the same 'blocks.{i}.attn' as the
looped model's, so the two read alike.
"""
from __future__ import annotations

import collections
import math

import jax
import jax.numpy as jnp

from scalelab.core import naming

MODES = ('none', 'global', 'groups')
KINDS = ('param', 'grad', 'update')
MIN_HISTORY = 10  # losses a z-score needs before it means anything


def group_of(name: str, stacked: str | None) -> tuple[str, bool]:
    """(group, stacked?) of a parameter; a stacked group holds '{}' for the layer index."""
    parts = name.split('.')
    if stacked is not None and parts[0] == stacked and len(parts) > 2:
        return f'{parts[0]}.{{}}.{parts[1]}', True
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return '.'.join(parts[:i + 2]), False
    return parts[0], False


def layout(abstract_params, stacked: str | None) -> tuple[tuple[str, bool], ...]:
    """(group, stacked?) for every leaf in tree order: static, so a step closes over it."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    return tuple(group_of(naming.name(path), stacked) for path, _ in leaves)


def group_sq_sums(tree, groups: tuple[tuple[str, bool], ...]) -> dict[str, jax.Array]:
    """Sum of squares (float32) of each group's leaves; a stacked group's is a vector, one
    entry a layer (not one output a layer: the program stays the same size at any depth)."""
    sums = {}
    for (group, stacked), leaf in zip(groups, jax.tree.leaves(tree), strict=True):
        sq = jnp.square(leaf.astype(jnp.float32))
        axes = tuple(range(1, leaf.ndim)) if stacked else None
        sums[group] = sums.get(group, 0.0) + jnp.sum(sq, axis=axes)
    return sums


def norms(params, grads, updates, groups, mode: str) -> dict[str, jax.Array]:
    """'param_norm', 'grad_norm', 'update_norm' and 'update_ratio' (update over param,
    the fraction a step moves the weights), global and, in mode 'groups', as
    'param_norm/<group>' and so on. Inside the step: a few reductions over the parameters."""
    if mode == 'none':
        return {}
    sums = {kind: group_sq_sums(tree, groups) for kind, tree in zip(KINDS, (params, grads, updates))}
    out = {f'{kind}_norm': jnp.sqrt(sum(jnp.sum(s) for s in sums[kind].values())) for kind in KINDS}
    out['update_ratio'] = _ratio(out['update_norm'], out['param_norm'])
    if mode == 'groups':
        for group in sums['param']:
            for kind in KINDS:
                out[f'{kind}_norm/{group}'] = jnp.sqrt(sums[kind][group])
            out[f'update_ratio/{group}'] = _ratio(out[f'update_norm/{group}'], out[f'param_norm/{group}'])
    return out


def per_layer(values: dict) -> dict[str, float]:
    """A step's norms as numbers, a stacked group's vector spread to one name a layer
    ('param_norm/blocks.{}.attn' -> 'param_norm/blocks.0.attn', ...)."""
    out = {}
    for key, value in values.items():
        if '{}' in key:
            out.update({key.format(i): float(v) for i, v in enumerate(value)})
        else:
            out[key] = float(value)
    return out


def _ratio(update_norm, param_norm):
    """0 where the parameters are all zero (a zero-initialised layer's first step)."""
    return jnp.where(param_norm > 0, update_norm / jnp.where(param_norm > 0, param_norm, 1.0), 0.0)


class LossSpikes:
    """A rolling z-score of each step's loss against the `window` losses before it.

    A spike is a loss more than `threshold` standard deviations above that
    window's mean. Non-finite losses are left to the divergence check.
    """

    def __init__(self, window: int, threshold: float):
        self.history = collections.deque(maxlen=window)
        self.threshold = threshold

    def add(self, losses: list[float]) -> tuple[float | None, int]:
        """(largest z-score among `losses`, or None before enough history; spikes among them)."""
        largest, spikes = None, 0
        for loss in losses:
            if not math.isfinite(loss):
                continue
            if len(self.history) >= MIN_HISTORY:
                mean = sum(self.history) / len(self.history)
                std = math.sqrt(sum((x - mean) ** 2 for x in self.history) / (len(self.history) - 1))
                z = float((loss - mean) / std) if std > 0 else 0.0
                largest = z if largest is None else max(largest, z)
                spikes += int(z > self.threshold)
            self.history.append(loss)
        return largest, spikes
