"""LSTM language model: embedding, stacked nnx LSTM cells run under jax.lax.scan, a vocabulary head."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from scalelab.core.parallel import constrain
from scalelab.models import base, layers

TASKS = ('lm',)
DEFAULT_DATA = 'text'
CHOICES = {}
POSITIVE = ('d_embed', 'd_hidden', 'n_layers')
EMBEDDING_PARAMS = ('embed', 'head')


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name='lstm',
        vocab_size=0,         # 0: the data's vocabulary (its tokenizer's)
        d_embed=128,
        d_hidden=256,
        n_layers=1,
    ))


def resolve(cfg) -> None:
    pass


def validate(cfg, spec) -> list[str]:
    return layers.vocab_problems(cfg.vocab_size, spec)


def cell(d_in: int, d_hidden: int, rngs) -> nnx.LSTMCell:
    return nnx.LSTMCell(d_in, d_hidden, rngs=rngs,
                        kernel_metadata={'out_sharding': ('embed', 'mlp')},
                        recurrent_kernel_metadata={'out_sharding': (None, 'mlp')},
                        bias_metadata={'out_sharding': ('mlp',)})


class Model(nnx.Module):
    def __init__(self, cfg, spec, *, rngs: nnx.Rngs):
        self.embed = layers.embedding(cfg.vocab_size, cfg.d_embed, 1.0, rngs)
        dims = [cfg.d_embed] + [cfg.d_hidden] * cfg.n_layers
        self.cells = nnx.List([cell(a, cfg.d_hidden, rngs) for a in dims[:-1]])
        self.head = layers.Dense((cfg.d_hidden,), (cfg.vocab_size,), ('mlp', 'vocab'),
                                 std=1 / math.sqrt(cfg.d_hidden), use_bias=True, rngs=rngs)

    def __call__(self, tokens_BxL, *, train: bool = False, rngs=None):
        x_LxBxD = jnp.swapaxes(self.embed(tokens_BxL), 0, 1)  # time-major for the scan
        for lstm in self.cells:
            graphdef, state = nnx.split(lstm)
            batch, hidden = x_LxBxD.shape[1], lstm.hidden_features
            carry = (jnp.zeros((batch, hidden), x_LxBxD.dtype), jnp.zeros((batch, hidden), x_LxBxD.dtype))

            def step(carry, x_BxD, graphdef=graphdef, state=state):
                return nnx.merge(graphdef, state)(carry, x_BxD)

            _, x_LxBxD = jax.lax.scan(step, carry, x_LxBxD)
            x_LxBxD = constrain(x_LxBxD, None, 'act_batch', 'act_mlp')
        return self.head(jnp.swapaxes(x_LxBxD, 0, 1))


def param_counts(cfg, spec) -> dict[str, int]:
    d_in = [cfg.d_embed] + [cfg.d_hidden] * (cfg.n_layers - 1)
    cells = sum(4 * (a * cfg.d_hidden + cfg.d_hidden * cfg.d_hidden + cfg.d_hidden) for a in d_in)
    embedding = cfg.vocab_size * cfg.d_embed + cfg.d_hidden * cfg.vocab_size + cfg.vocab_size
    return {'total': embedding + cells, 'embedding': embedding, 'non_embedding': cells}


def forward_flops(cfg, spec, causal: bool = True) -> float:
    """Per time step: four gates of (input + recurrent) matmuls per layer, then the head."""
    d_in = [cfg.d_embed] + [cfg.d_hidden] * (cfg.n_layers - 1)
    per_step = sum(2 * 4 * cfg.d_hidden * (a + cfg.d_hidden) for a in d_in) + 2 * cfg.d_hidden * cfg.vocab_size
    return float(spec.input_shape[0] * per_step)


def head_params(cfg) -> int:
    """The output layer, weights and biases: its matmul is the head's."""
    return (cfg.d_hidden + 1) * cfg.vocab_size


class LSTM(base.Family):
    name = 'lstm'
