"""Model families and the registry that maps `config.model.name` to one.

A family module provides: default_config(), resolve(cfg) (fills derived values),
validate(cfg, spec) -> list of problems, CHOICES (key -> valid values),
POSITIVE (keys that must be > 0), EMBEDDING_PARAMS (top-level attributes
counted as embedding), TASKS (what it can learn), DEFAULT_DATA (a source name)
and Model(cfg, spec, rngs=...), called as model(inputs, train=..., rngs=...).
"""
from __future__ import annotations

import types

import jax
import ml_collections
from flax import nnx

from scalelab.models import cnn, lstm, mlp, resnet, seq2seq, transformer
from scalelab.tasks import DataSpec

FAMILIES: dict[str, types.ModuleType] = {
    'transformer': transformer,
    'mlp': mlp,
    'cnn': cnn,
    'resnet': resnet,
    'lstm': lstm,
    'seq2seq': seq2seq,
}


def family(name: str) -> types.ModuleType:
    if name not in FAMILIES:
        raise KeyError(f'model.name={name!r}: unknown model family; valid: {sorted(FAMILIES)}')
    return FAMILIES[name]


def resolve(cfg: ml_collections.ConfigDict, spec: DataSpec) -> None:
    """Fill a model section's derived values in place: the family's own, and a
    vocab_size of 0 from the data (its tokenizer's vocabulary)."""
    family(cfg.name).resolve(cfg)
    if cfg.get('vocab_size') == 0:
        cfg.vocab_size = spec.num_outputs


def lr_groups(cfg: ml_collections.ConfigDict):
    """Per-parameter learning-rate groups a family asks for (muP), or None."""
    groups = getattr(family(cfg.name), 'lr_groups', None)
    return groups(cfg) if groups else None


def stacked_prefix(cfg: ml_collections.ConfigDict) -> str | None:
    """The top-level attribute whose leaves hold every layer on their first axis
    (scan over layers), or None: diagnostics name each layer's norms alike either way."""
    stacked = getattr(family(cfg.name), 'stacked_prefix', None)
    return stacked(cfg) if stacked else None


def build(cfg: ml_collections.ConfigDict, spec: DataSpec, seed: int | jax.Array) -> nnx.Module:
    """Concrete model. Shardings are applied by the caller (jit out_shardings),
    so variables are created without eager sharding and need no mesh context."""
    frozen = ml_collections.FrozenConfigDict(cfg)
    with nnx.use_eager_sharding(False):
        return family(cfg.name).Model(frozen, spec, rngs=nnx.Rngs(params=seed))


def abstract(cfg: ml_collections.ConfigDict, spec: DataSpec) -> nnx.Module:
    """The model with ShapeDtypeStructs for values: shapes and metadata, no memory."""
    return nnx.eval_shape(lambda: build(cfg, spec, 0))


def split_abstract(cfg: ml_collections.ConfigDict, spec: DataSpec) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, params, other state such as batch statistics) of the abstract model."""
    return nnx.split(abstract(cfg, spec), nnx.Param, ...)
