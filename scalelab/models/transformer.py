"""Decoder-only Transformer language model.

Pre-norm blocks with causal multi-head attention and an MLP. The options
(norm, MLP, positions, tying, biases) span GPT-2 exactly (layernorm, gelu,
learned positions, tied, biases) and modern variants (rmsnorm, swiglu, rope).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from scalelab.models import layers
from scalelab.parallel import constrain

TASK = 'lm'
CHOICES = {
    'norm': ('rmsnorm', 'layernorm'),
    'mlp': ('gelu', 'swiglu'),
    'position': ('rope', 'learned'),
}
POSITIVE = ('vocab_size', 'd_model', 'n_layers', 'n_heads', 'max_len')
# Top-level attributes whose parameters count as embedding parameters (Kaplan et al.).
EMBEDDING_PARAMS = ('embed', 'pos_embed', 'head')


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name='transformer',
        vocab_size=256,
        d_model=256,
        n_layers=4,
        n_heads=4,
        d_ff=0,               # 0: 4 * d_model
        max_len=1024,         # rows of the learned position table
        norm='rmsnorm',
        mlp='gelu',
        position='rope',
        rope_base=10000.0,
        tie_embeddings=True,
        use_bias=False,
        dropout=0.0,
        init_std=0.02,
        scale_residual_init=True,  # GPT-2: residual projections get std / sqrt(2 n_layers)
        norm_eps=1e-5,
    ))


def resolve(cfg: ml_collections.ConfigDict) -> None:
    """Fill derived values in place."""
    if cfg.d_ff == 0:
        cfg.d_ff = 4 * cfg.d_model


def validate(cfg: ml_collections.ConfigDict, seq_len: int) -> list[str]:
    problems = []
    if cfg.d_ff < 0:
        problems.append(f'model.d_ff={cfg.d_ff}: must be positive (or 0 for 4 * d_model)')
    if cfg.d_model % cfg.n_heads:
        problems.append(f'model.n_heads={cfg.n_heads}: must divide model.d_model={cfg.d_model}')
    elif cfg.position == 'rope' and (cfg.d_model // cfg.n_heads) % 2:
        problems.append(f'model.n_heads={cfg.n_heads}: rope needs an even head size, '
                        f'but d_model/n_heads = {cfg.d_model // cfg.n_heads}')
    if cfg.position == 'learned' and seq_len > cfg.max_len:
        problems.append(f'data.seq_len={seq_len}: exceeds model.max_len={cfg.max_len} '
                        'of the learned position table')
    if not 0.0 <= cfg.dropout < 1.0:
        problems.append(f'model.dropout={cfg.dropout}: must be in [0, 1)')
    if cfg.init_std <= 0:
        problems.append(f'model.init_std={cfg.init_std}: must be positive')
    return problems


def rope(x_BxLxNxH: jax.Array, positions_L: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding (rotate-half form)."""
    half = x_BxLxNxH.shape[-1] // 2
    inv_freq_H2 = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_LxH2 = positions_L.astype(jnp.float32)[:, None] * inv_freq_H2[None, :]
    sin = jnp.sin(angles_LxH2)[None, :, None, :].astype(x_BxLxNxH.dtype)
    cos = jnp.cos(angles_LxH2)[None, :, None, :].astype(x_BxLxNxH.dtype)
    x1, x2 = x_BxLxNxH[..., :half], x_BxLxNxH[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Attention(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        d, n = cfg.d_model, cfg.n_heads
        h = d // n
        out_std = _residual_std(cfg)
        self.cfg = cfg
        names_in = ('embed', 'heads', 'head_dim')
        self.q = layers.Dense((d,), (n, h), names_in, std=cfg.init_std, use_bias=cfg.use_bias, rngs=rngs)
        self.k = layers.Dense((d,), (n, h), names_in, std=cfg.init_std, use_bias=cfg.use_bias, rngs=rngs)
        self.v = layers.Dense((d,), (n, h), names_in, std=cfg.init_std, use_bias=cfg.use_bias, rngs=rngs)
        self.o = layers.Dense((n, h), (d,), ('heads', 'head_dim', 'embed'), std=out_std,
                              use_bias=cfg.use_bias, rngs=rngs)

    def __call__(self, x_BxLxD, positions_L, rngs):
        heads = ('act_batch', 'act_seq', 'act_heads', None)
        q = constrain(self.q(x_BxLxD), *heads)
        k = constrain(self.k(x_BxLxD), *heads)
        v = constrain(self.v(x_BxLxD), *heads)
        if self.cfg.position == 'rope':
            q = rope(q, positions_L, self.cfg.rope_base)
            k = rope(k, positions_L, self.cfg.rope_base)
        out_BxLxNxH = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        out_BxLxNxH = constrain(out_BxLxNxH, *heads)
        return layers.dropout(self.o(out_BxLxNxH), self.cfg.dropout, rngs)


class MLP(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        d, f = cfg.d_model, cfg.d_ff
        self.cfg = cfg
        self.up = layers.Dense((d,), (f,), ('embed', 'mlp'), std=cfg.init_std, use_bias=cfg.use_bias, rngs=rngs)
        self.gate = (layers.Dense((d,), (f,), ('embed', 'mlp'), std=cfg.init_std, use_bias=cfg.use_bias,
                                  rngs=rngs) if cfg.mlp == 'swiglu' else None)
        self.down = layers.Dense((f,), (d,), ('mlp', 'embed'), std=_residual_std(cfg),
                                 use_bias=cfg.use_bias, rngs=rngs)

    def __call__(self, x_BxLxD, rngs):
        h_BxLxF = self.up(x_BxLxD)
        if self.gate is not None:
            h_BxLxF = jax.nn.silu(self.gate(x_BxLxD)) * h_BxLxF
        else:
            h_BxLxF = jax.nn.gelu(h_BxLxF, approximate=True)
        h_BxLxF = constrain(h_BxLxF, 'act_batch', 'act_seq', 'act_mlp')
        return layers.dropout(self.down(h_BxLxF), self.cfg.dropout, rngs)


class Block(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.attn_norm = _norm(cfg, rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = _norm(cfg, rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x_BxLxD, positions_L, rngs):
        x_BxLxD = x_BxLxD + self.attn(self.attn_norm(x_BxLxD), positions_L, rngs)
        x_BxLxD = x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD), rngs)
        return constrain(x_BxLxD, 'act_batch', 'act_seq', 'act_embed')


class Model(nnx.Module):
    """tokens (B, L) int -> logits (B, L, vocab)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model,
                               embedding_init=layers.normal(cfg.init_std, ('vocab', 'embed')), rngs=rngs)
        self.pos_embed = (nnx.Param(layers.normal(cfg.init_std, ('pos', 'embed'))(
            rngs.params(), (cfg.max_len, cfg.d_model))) if cfg.position == 'learned' else None)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.final_norm = _norm(cfg, rngs)
        self.head = (None if cfg.tie_embeddings else
                     layers.Dense((cfg.d_model,), (cfg.vocab_size,), ('embed', 'vocab'),
                                  std=cfg.init_std, use_bias=False, rngs=rngs))

    def __call__(self, tokens_BxL: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        positions_L = jnp.arange(tokens_BxL.shape[1])
        x_BxLxD = self.embed(tokens_BxL)
        if self.pos_embed is not None:
            x_BxLxD = x_BxLxD + self.pos_embed[...][positions_L]
        x_BxLxD = layers.dropout(x_BxLxD, self.cfg.dropout, rngs)
        x_BxLxD = constrain(x_BxLxD, 'act_batch', 'act_seq', 'act_embed')
        for block in self.blocks:
            x_BxLxD = block(x_BxLxD, positions_L, rngs)
        x_BxLxD = self.final_norm(x_BxLxD)
        logits_BxLxV = self.embed.attend(x_BxLxD) if self.head is None else self.head(x_BxLxD)
        return constrain(logits_BxLxV, 'act_batch', 'act_seq', 'act_vocab')


def _norm(cfg, rngs):
    return layers.norm(cfg.norm, cfg.d_model, eps=cfg.norm_eps, use_bias=cfg.use_bias, rngs=rngs)


def _residual_std(cfg) -> float:
    return cfg.init_std / math.sqrt(2 * cfg.n_layers) if cfg.scale_residual_init else cfg.init_std
