"""Model families and the registry that maps `config.model.name` to one.

A family module provides: default_config(), resolve(cfg), validate(cfg, seq_len)
-> list of problems, CHOICES, POSITIVE, EMBEDDING_PARAMS, TASK and Model.
"""
from __future__ import annotations

import types

import jax
import ml_collections
from flax import nnx

from scalelab.models import transformer

FAMILIES: dict[str, types.ModuleType] = {
    'transformer': transformer,
}


def family(name: str) -> types.ModuleType:
    if name not in FAMILIES:
        raise KeyError(f'model.name={name!r}: unknown model family; valid: {sorted(FAMILIES)}')
    return FAMILIES[name]


def build(cfg: ml_collections.ConfigDict, seed: int | jax.Array) -> nnx.Module:
    """Concrete model. Shardings are applied by the caller (jit out_shardings),
    so variables are created without eager sharding and need no mesh context."""
    frozen = ml_collections.FrozenConfigDict(cfg)
    with nnx.use_eager_sharding(False):
        return family(cfg.name).Model(frozen, rngs=nnx.Rngs(params=seed))


def abstract(cfg: ml_collections.ConfigDict) -> nnx.Module:
    """The model with ShapeDtypeStructs for values: shapes and metadata, no memory."""
    return nnx.eval_shape(lambda: build(cfg, 0))


def split_abstract(cfg: ml_collections.ConfigDict) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, params, other state such as batch statistics) of the abstract model."""
    return nnx.split(abstract(cfg), nnx.Param, ...)
