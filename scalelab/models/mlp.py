"""Multi-layer perceptron on flattened inputs (images or vectors)."""
from __future__ import annotations

import math
import re

import ml_collections
from flax import nnx

from scalelab.core.parallel import constrain
from scalelab.models import base, layers

TASKS = ('classification', 'regression')
DEFAULT_DATA = 'images'
CHOICES = {'activation': tuple(layers.ACTIVATIONS)}
POSITIVE = ('width',)
EMBEDDING_PARAMS = ()


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name='mlp',
        width=256,          # hidden units per layer
        depth=2,            # hidden layers (0: a linear model)
        activation='relu',
        use_bias=True,
    ))


def resolve(cfg) -> None:
    pass


def validate(cfg, spec) -> list[str]:
    return [f'model.depth={cfg.depth}: must be non-negative'] if cfg.depth < 0 else []


def hidden_axes(depth: int) -> list[str]:
    """Logical name of each layer's input features: alternating 'embed' (split
    over fsdp) and 'mlp' (split over tensor), as Megatron pairs its MLP matmuls."""
    return ['embed' if i % 2 == 0 else 'mlp' for i in range(depth + 1)]


class Model(nnx.Module):
    def __init__(self, cfg, spec, *, rngs: nnx.Rngs):
        self.activation = cfg.activation
        dims = [math.prod(spec.input_shape)] + [cfg.width] * cfg.depth + [spec.num_outputs]
        axes = hidden_axes(cfg.depth) + [None]
        self.axes = tuple(axes)
        self.dense = nnx.List([
            layers.Dense((a,), (b,), (axes[i], axes[i + 1]), std=1 / math.sqrt(a), use_bias=cfg.use_bias, rngs=rngs)
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))])

    def __call__(self, x, *, train: bool = False, rngs=None):
        h = x.reshape(x.shape[0], -1)
        for i, dense in enumerate(self.dense):
            h = dense(h)
            if i < len(self.dense) - 1:
                h = layers.ACTIVATIONS[self.activation](h)
                h = constrain(h, 'act_batch', f'act_{self.axes[i + 1]}')
        return h


def hidden_matrices(cfg):
    """Muon's matrices: the kernels from one hidden layer to the next (width -> width); the
    first (inputs -> width) and the last (width -> outputs) are the input and output layers,
    AdamW's as for the Transformer's embedding and head. Under two hidden layers there are none."""
    if cfg.depth < 2:
        return None
    kernel = re.compile(r'^dense\.(\d+)\.kernel$')

    def axes(name: str, ndim: int):
        found = kernel.match(name)
        return ((0,), (1,)) if found and 1 <= int(found.group(1)) < cfg.depth else None
    return axes


def param_counts(cfg, spec) -> dict[str, int]:
    return layers.no_embedding(layers.dense_params(_dims(cfg, spec), cfg.use_bias))


def forward_flops(cfg, spec, causal: bool = True) -> float:
    return layers.dense_flops(_dims(cfg, spec))


def _dims(cfg, spec) -> list[int]:
    return [math.prod(spec.input_shape)] + [cfg.width] * cfg.depth + [spec.num_outputs]


class MLP(base.Family):
    name = 'mlp'
