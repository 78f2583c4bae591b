"""muP's coordinate check: how activation scales change with width after a few steps.

Under muP (Yang et al., Tensor Programs V) every layer's typical activation
stays put as the model widens, which is what lets the best learning rate
found on a narrow model transfer to a wide one; under the standard
parametrization the readout's grows with width at a fixed learning rate.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scalelab import data
from scalelab.data import pipeline
from scalelab.training import plan, train


def activation_scales(cfg, steps: int) -> dict[str, float]:
    """Mean |activation| per recorded layer after `steps` training steps, on one device."""
    the_plan = plan.make(cfg, 1)
    cfg = the_plan.cfg
    source = data.load(cfg.data, cfg.train.global_batch, cfg.seed)
    rows = slice(0, cfg.train.global_batch)
    first = source.train_batch(0, rows)
    built = train.build(the_plan, jax.devices()[:1],
                        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), first))
    batch = lambda step: pipeline.to_global(built.mesh, source.train_batch(step, rows), cfg.train.global_batch)
    state = jax.jit(built.prepared.init, out_shardings=built.prepared.shardings)()
    for step in range(steps):
        state, _ = built.train_fn(state, batch(step))
    model = nnx.merge(built.prepared.spec.graphdef, state['params'], state['model_state'])
    scales = jax.jit(lambda tokens: {k: jnp.mean(jnp.abs(v)) for k, v in model.activations(tokens).items()})
    return {k: float(v) for k, v in scales(batch(steps)['inputs']).items()}


def coordinate_check(base_cfg, widths: list[int], steps: int) -> dict[int, dict[str, float]]:
    """activation_scales for each width (model.d_model), everything else as in base_cfg."""
    out = {}
    for width in widths:
        cfg = base_cfg.copy_and_resolve_references()
        cfg.model.d_model = width
        out[width] = activation_scales(cfg, steps)
    return out


def spread(scales: dict[int, dict[str, float]]) -> dict[str, float]:
    """max / min of each layer's scale across widths: 1 is perfectly flat."""
    layers = next(iter(scales.values())).keys()
    return {layer: float(np.max([s[layer] for s in scales.values()]) / np.min([s[layer] for s in scales.values()]))
            for layer in layers}
