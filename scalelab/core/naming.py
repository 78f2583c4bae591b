"""Parameter names: a parameter's path in the model, its parts joined by '.'
('blocks.0.attn.q.kernel'). The same names key safetensors files (export.py),
weight-decay and learning-rate groups (optim.py), frozen parameters
(train.freeze) and the norms of diagnostics.py."""
from __future__ import annotations

import jax
import numpy as np


def name(path) -> str:
    """'blocks.0.attn.q.kernel' for a jax key path."""
    return '.'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def flatten(params) -> dict[str, np.ndarray]:
    return {name(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def names(params):
    """The same tree with each leaf replaced by its name."""
    return jax.tree_util.tree_map_with_path(lambda path, _: name(path), params)
