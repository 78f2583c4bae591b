"""Model families and the registry that maps `config.model.name` to one.

A family is a subclass of models.base.Family (its docstring lists what a family
provides) in its own file; adding one touches that file and FAMILIES below.

Shape letters, one meaning each, as suffixes of array names in this package
(`x_BxLxD`: batch, positions, model width):
    B  batch rows                          D  model width (d_model)
    L  sequence positions (queries; a      F  MLP width (d_ff)
       decoder's target positions)         N  query heads
    L1 L + 1 (decoded tokens with start)   K  key/value heads (N with grouped-query attention: fewer)
    S  key/value positions (a source)      H  head size (d_model / N)
    T  positions of one decoding call      V  vocabulary (output classes)
    W  beam width (2W: twice it)           R  rows of a decoding batch (B x beams)
    1  an axis of size one
Images go in as (batch, height, width, channels) under the name `images`.
"""
from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from scalelab.core.tasks import DataSpec
from scalelab.models import base, cnn, lstm, mlp, resnet, seq2seq, transformer

FAMILIES: dict[str, type[base.Family]] = {f.name: f for f in (
    transformer.Transformer, mlp.MLP, cnn.CNN, resnet.ResNet, lstm.LSTM, seq2seq.Seq2Seq)}


def family(name: str) -> type[base.Family]:
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
    return family(cfg.name).lr_groups(cfg)


def hidden_matrices(cfg: ml_collections.ConfigDict):
    """name, ndim -> (input axes, output axes) of each hidden weight matrix (Muon), or None."""
    return family(cfg.name).hidden_matrices(cfg)


def stacked_prefix(cfg: ml_collections.ConfigDict) -> str | None:
    """The top-level attribute whose leaves hold every layer on their first axis
    (scan over layers), or None: diagnostics name each layer's norms alike either way."""
    return family(cfg.name).stacked_prefix(cfg)


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
