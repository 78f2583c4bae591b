"""Decoder-only Transformer language model.

Pre-norm blocks with causal multi-head attention and an MLP. The options
(norm, MLP, positions, tying, biases) span GPT-2 exactly (layernorm, gelu,
learned positions, tied, biases) and modern variants (rmsnorm, swiglu, rope).
"""
from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from scalelab.core.parallel import constrain
from scalelab.models import base, layers

TASKS = ('lm',)
DEFAULT_DATA = 'text'
CHOICES = {
    'norm': ('rmsnorm', 'layernorm'),
    'mlp': ('gelu', 'swiglu'),
    'position': ('rope', 'learned'),
    'remat': ('none', 'full', 'dots_saveable', 'dots_with_no_batch_dims_saveable'),
    'attention': ('auto', 'xla', 'cudnn', 'einsum'),
    'parametrization': ('standard', 'mup'),
}
# muP's hidden (matrix-like) weights: their Adam learning rate scales as 1 / width.
MUP_HIDDEN = re.compile(r'^blocks\.(\d+\.)?(attn\.[qkvo]|mlp\.(up|gate|down))\.kernel$')
# What a rematerialised layer keeps from its forward pass (the rest is recomputed).
REMAT_POLICIES = {
    'full': None,  # nothing: only the layer's input
    'dots_saveable': jax.checkpoint_policies.dots_saveable,  # every matmul output
    'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # not attention's
}
POSITIVE = ('d_model', 'n_layers', 'n_heads', 'max_len')
# The options that make this transformer GPT-2's architecture (scalelab.hf converts exactly these).
GPT2_OPTIONS = dict(norm='layernorm', mlp='gelu', position='learned', use_bias=True, parametrization='standard',
                    qk_norm=False, attn_softcap=0.0, logit_softcap=0.0, attn_mult=1.0, output_mult=1.0,
                    embed_mult=1.0)
# Top-level attributes whose parameters count as embedding parameters (Kaplan et al.).
EMBEDDING_PARAMS = ('embed', 'pos_embed', 'head')


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name='transformer',
        vocab_size=0,         # 0: the data's vocabulary (its tokenizer's); larger pads the embedding
        d_model=256,
        n_layers=4,
        n_heads=4,
        head_dim=0,           # > 0: n_heads = d_model / head_dim (heads keep their size as width grows)
        n_kv_heads=0,         # grouped-query attention: key/value heads, dividing n_heads (0: n_heads)
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
        scan_layers=False,    # one compiled layer applied n_layers times: compile time flat in depth
        remat='none',         # none | full | dots_saveable | dots_with_no_batch_dims_saveable (see REMAT_POLICIES)
        attention='auto',     # auto (cuDNN on GPU in 16-bit, einsum on CPU, else XLA) | xla | cudnn | einsum
        parametrization='standard',  # standard | mup (Tensor Programs V), relative to mup_base_width
        mup_base_width=128,
        # Multipliers (Tensor Programs V's alpha's; 1 = none): attention logits, output logits, embeddings.
        attn_mult=1.0,
        output_mult=1.0,
        embed_mult=1.0,
        zero_query=False,     # initialise the query projection to zero (TP-V's recommendation under muP)
        zero_readout=False,   # initialise the untied output layer to zero
        # Stability (Wortsman et al. 2023; Gemma 2): all off by default.
        qk_norm=False,        # normalise queries and keys per head (model.norm's kind) before the scores
        attn_softcap=0.0,     # > 0: attention scores -> c * tanh(scores / c)
        logit_softcap=0.0,    # > 0: output logits -> c * tanh(logits / c)
    ))


def resolve(cfg: ml_collections.ConfigDict) -> None:
    """Fill derived values in place."""
    if cfg.head_dim > 0 and cfg.d_model % cfg.head_dim == 0:
        cfg.n_heads = cfg.d_model // cfg.head_dim
    if cfg.d_ff == 0:
        cfg.d_ff = 4 * cfg.d_model
    if cfg.n_kv_heads == 0:
        cfg.n_kv_heads = cfg.n_heads


def validate(cfg: ml_collections.ConfigDict, spec) -> list[str]:
    """Problems of a resolved section (resolve has filled n_heads, d_ff and n_kv_heads)."""
    problems = []
    seq_len = spec.input_shape[0]
    problems += layers.vocab_problems(cfg.vocab_size, spec)
    if cfg.head_dim < 0 or (cfg.head_dim > 0 and cfg.d_model % cfg.head_dim):
        problems.append(f'model.head_dim={cfg.head_dim}: must divide model.d_model={cfg.d_model} (or be 0)')
    if cfg.parametrization == 'mup' and cfg.tie_embeddings:
        problems.append("model.parametrization='mup': needs model.tie_embeddings=False (the readout is "
                        'scaled apart from the input embedding)')
    if cfg.mup_base_width <= 0:
        problems.append(f'model.mup_base_width={cfg.mup_base_width}: must be positive')
    elif cfg.parametrization == 'mup':
        problems += _mup_width_problems(cfg)
    if cfg.zero_readout and cfg.tie_embeddings:
        problems.append('model.zero_readout=True: needs model.tie_embeddings=False (a zero readout would '
                        'zero the tied input embedding too)')
    if cfg.n_kv_heads < 0 or (cfg.n_kv_heads > 0 and cfg.n_heads % cfg.n_kv_heads):
        problems.append(f'model.n_kv_heads={cfg.n_kv_heads}: must divide model.n_heads={cfg.n_heads} '
                        '(or be 0 for n_heads)')
    for key in ('attn_softcap', 'logit_softcap', 'attn_mult', 'output_mult', 'embed_mult'):
        if cfg[key] < 0 or (key.endswith('mult') and cfg[key] == 0):
            valid = 'non-negative (0: off)' if key.endswith('softcap') else 'positive'
            problems.append(f'model.{key}={cfg[key]}: must be {valid}')
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


def _mup_width_problems(cfg) -> list[str]:
    """muP scales every hidden fan-in by one width_mult, so d_ff must grow with d_model
    and the base width must split into the model's heads."""
    problems = []
    if cfg.d_ff not in (0, 4 * cfg.d_model):
        problems.append(f"model.d_ff={cfg.d_ff}: under model.parametrization='mup' it must be 0 (4 * d_model), "
                        "so the MLP's fan-in grows with width as the hidden learning rate assumes")
    if cfg.head_dim == 0 and cfg.mup_base_width % cfg.n_heads:
        problems.append(f'model.mup_base_width={cfg.mup_base_width}: must split into model.n_heads={cfg.n_heads} '
                        'heads (the base head size sets the attention scale)')
    return problems


def width_mult(cfg) -> float:
    """d_model / base width under muP; 1 under the standard parametrization."""
    return cfg.d_model / cfg.mup_base_width if cfg.parametrization == 'mup' else 1.0


def attention_scale(cfg) -> float:
    """What q.k is multiplied by. Standard: attn_mult / sqrt(head size). muP: attn_mult * sqrt(base head size)
    / head size, i.e. 1/head size as heads widen (TP-V), and exactly the standard scale at the base width.
    With model.head_dim set, heads keep their size as the model widens, so the scale stays put."""
    head = cfg.d_model // cfg.n_heads
    if cfg.parametrization != 'mup':
        return cfg.attn_mult / math.sqrt(head)
    base_head = cfg.head_dim if cfg.head_dim > 0 else cfg.mup_base_width // cfg.n_heads
    return cfg.attn_mult * math.sqrt(base_head) / head


def lr_groups(cfg):
    """muP (Adam): hidden weights learn at lr / width_mult; embeddings, readout,
    norms and biases at lr. None under the standard parametrization."""
    if cfg.parametrization != 'mup':
        return None
    return ({'hidden': 1.0 / width_mult(cfg), 'other': 1.0},
            lambda name: 'hidden' if MUP_HIDDEN.search(name) else 'other')


def stacked_prefix(cfg) -> str | None:
    return 'blocks' if cfg.scan_layers else None


def hidden_matrices(cfg):
    """Muon's matrices are muP's hidden weights: q, k, v (d_model -> heads x head_dim), o
    (heads x head_dim -> d_model) and the MLP's (in -> out); a leading layer axis (scan) is a
    batch axis, each layer its own matrix."""
    def axes(name: str, ndim: int):
        found = MUP_HIDDEN.search(name)
        if found is None:
            return None
        if found.group(2) in ('attn.q', 'attn.k', 'attn.v'):
            return (ndim - 3,), (ndim - 2, ndim - 1)
        if found.group(2) == 'attn.o':
            return (ndim - 3, ndim - 2), (ndim - 1,)
        return (ndim - 2,), (ndim - 1,)
    return axes


def attention_impl(choice: str, dtype) -> str:
    """cuDNN's fused attention needs a GPU and 16-bit inputs; on CPU the heads-major
    einsum form is faster than XLA's; XLA's runs everywhere."""
    if choice != 'auto':
        return choice
    backend = jax.default_backend()
    if backend == 'gpu' and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return 'cudnn'
    return 'einsum' if backend == 'cpu' else 'xla'


def attention_einsum(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxLxS, scale: float, softcap: float = 0.0):
    """Attention written out, heads ahead of the sequence, with float32 scores and softmax (as
    jax.nn.dot_product_attention's XLA form). Query head n reads key/value head n // (N / K)
    (grouped-query attention when K < N: each key/value head is repeated for its queries).
    Also returns the largest score before capping, a diagnostic of attention-logit growth
    (Wortsman et al. 2023). XLA:CPU runs the batched matmuls of this 4-D layout about twice
    as fast as XLA's own form (2.3 s -> 1.2 s of a d_model-512 step's 11 s in a profile); a
    5-D (kv head, group) layout measured 15% slower at the default model."""
    N, K = q_BxLxNxH.shape[2], k_BxSxKxH.shape[2]
    q_BxNxLxH = jnp.swapaxes(q_BxLxNxH, 1, 2)
    k_BxNxSxH, v_BxNxSxH = (jnp.swapaxes(jnp.repeat(t, N // K, axis=2), 1, 2) for t in (k_BxSxKxH, v_BxSxKxH))
    scores_BxNxLxS = jnp.einsum('bnqh,bnkh->bnqk', q_BxNxLxH, k_BxNxSxH, preferred_element_type=jnp.float32) * scale
    mask_Bx1xLxS = mask_BxLxS[:, None]
    masked = lambda scores: jnp.where(mask_Bx1xLxS, scores, -0.7 * jnp.finfo(jnp.float32).max)  # as jax's
    if softcap > 0:
        max_score = jnp.max(masked(scores_BxNxLxS))
        scores_BxNxLxS = softcap * jnp.tanh(scores_BxNxLxS / softcap)
    scores_BxNxLxS = masked(scores_BxNxLxS)
    if softcap == 0:  # the largest of the rows' maxima, which softmax computes anyway: no pass of its own
        max_score = jnp.max(jnp.max(scores_BxNxLxS, axis=-1, keepdims=True, initial=-jnp.inf))
    probs_BxNxLxS = jax.nn.softmax(scores_BxNxLxS, axis=-1).astype(v_BxNxSxH.dtype)
    return jnp.swapaxes(jnp.einsum('bnqk,bnkh->bnqh', probs_BxNxLxS, v_BxNxSxH), 1, 2), max_score


def max_attention_score(q_BxLxNxH, k_BxSxKxH, mask_BxLxS, scale: float) -> jax.Array:
    """The largest scaled q.k a fused attention kernel computed but did not return
    (an extra score matmul, outside the gradient)."""
    q_BxLxNxH, k_BxSxKxH = jax.lax.stop_gradient((q_BxLxNxH, k_BxSxKxH))
    k_BxSxNxH = jnp.repeat(k_BxSxKxH, q_BxLxNxH.shape[2] // k_BxSxKxH.shape[2], axis=2)
    scores_BxNxLxS = jnp.einsum('bqnh,bsnh->bnqs', q_BxLxNxH, k_BxSxNxH, preferred_element_type=jnp.float32) * scale
    return jnp.max(jnp.where(mask_BxLxS[:, None], scores_BxNxLxS, -jnp.inf))


class Positions(NamedTuple):
    """Where the tokens of a forward pass sit: their index, (L,) or per row (B, L), and
    RoPE's sin and cos there, (..., L, 1, H/2) float32 (None without RoPE), made once per
    pass for every layer."""
    index: jax.Array | np.ndarray
    sin: jax.Array | np.ndarray | None = None
    cos: jax.Array | np.ndarray | None = None


def positions_of(cfg, index: jax.Array | np.ndarray) -> Positions:
    """The positions `index` with their RoPE tables when cfg.position is 'rope'. Positions
    known when tracing (a NumPy index: training and scoring) give tables that are constants
    of the compiled program: computed with jnp, XLA fuses sin and cos into every op that reads
    them and evaluates them again for each batch row and head (5% of a 256x4 step on CPU)."""
    if cfg.position != 'rope':
        return Positions(index)
    xp = np if isinstance(index, np.ndarray) else jnp
    half = cfg.d_model // cfg.n_heads // 2
    inv_freq_H2 = xp.float32(cfg.rope_base) ** (-xp.arange(half, dtype=xp.float32) / xp.float32(half))
    angles = index.astype(xp.float32)[..., None, None] * inv_freq_H2  # (..., L, 1, H/2): a heads axis
    return Positions(index, xp.sin(angles), xp.cos(angles))


def rope(x_BxLxNxH: jax.Array, positions: Positions) -> jax.Array:
    """Rotary position embedding (rotate-half form) by the tables in `positions`."""
    half = x_BxLxNxH.shape[-1] // 2
    sin, cos = (t.astype(x_BxLxNxH.dtype) for t in (positions.sin, positions.cos))
    x1, x2 = x_BxLxNxH[..., :half], x_BxLxNxH[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Attention(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        d, n, kv = cfg.d_model, cfg.n_heads, cfg.n_kv_heads
        h = d // n
        self.cfg = cfg
        self.scale = attention_scale(cfg)
        names_in = ('embed', 'heads', 'head_dim')
        std = _hidden_std(cfg)
        self.q = layers.Dense((d,), (n, h), names_in, std=0.0 if cfg.zero_query else std, use_bias=cfg.use_bias,
                              rngs=rngs)
        self.k = layers.Dense((d,), (kv, h), names_in, std=std, use_bias=cfg.use_bias, rngs=rngs)
        self.v = layers.Dense((d,), (kv, h), names_in, std=std, use_bias=cfg.use_bias, rngs=rngs)
        self.o = layers.Dense((n, h), (d,), ('heads', 'head_dim', 'embed'), std=_residual_std(cfg),
                              use_bias=cfg.use_bias, rngs=rngs)
        self.q_norm = layers.norm(cfg.norm, h, eps=cfg.norm_eps, use_bias=cfg.use_bias, rngs=rngs) if cfg.qk_norm else None
        self.k_norm = layers.norm(cfg.norm, h, eps=cfg.norm_eps, use_bias=cfg.use_bias, rngs=rngs) if cfg.qk_norm else None

    def __call__(self, x_BxLxD, positions, rngs, kv=None, mask_BxLxS=None):
        """Self-attention, causal unless `mask_BxLxS` says which keys each query sees (an
        encoder: every real token). With `kv` = (k_cache, v_cache, index, key_positions_BxS),
        the new keys and values are written at `index` and every query attends to
        the cached keys at positions 0..its own (negative positions are padding).
        Returns (output, updated (k_cache, v_cache) or None, the largest attention score)."""
        q = self._queries(x_BxLxD)
        k, v = self.keys_values(x_BxLxD)
        if self.cfg.position == 'rope':
            q, k = rope(q, positions), rope(k, positions)
        causal = kv is None and mask_BxLxS is None
        if kv is None:
            L = q.shape[1]
            mask_BxLxS = jnp.tril(jnp.ones((L, L), bool))[None] if causal else mask_BxLxS
            new_kv = None
        else:
            k_cache, v_cache, index, key_positions_BxS = kv
            k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, index, 0, 0))
            v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, index, 0, 0))
            query_BxT = jnp.broadcast_to(positions.index, q.shape[:2])
            keys_Bx1xS = key_positions_BxS[:, None, :]
            mask_BxLxS = (keys_Bx1xS <= query_BxT[:, :, None]) & (keys_Bx1xS >= 0)
            k, v = k_cache.astype(q.dtype), v_cache.astype(q.dtype)
            new_kv = (k_cache, v_cache)
        out_BxLxNxH, max_score = self._attend(q, k, v, mask_BxLxS, causal)
        return layers.dropout(self.o(out_BxLxNxH), self.cfg.dropout, rngs), new_kv, max_score

    def keys_values(self, x_BxSxD):
        """Keys and values of a sequence (before positions): an encoder's output is projected
        once per source and every decoding step's cross-attention reuses them."""
        heads = ('act_batch', 'act_seq', 'act_heads', None)
        k = constrain(self.k(x_BxSxD), *heads)
        v = constrain(self.v(x_BxSxD), *heads)
        return (k if self.k_norm is None else self.k_norm(k)), v

    def cross(self, x_BxLxD, memory_kv, mask_BxLxS, rngs):
        """Cross-attention: queries from x, keys and values (from keys_values) of another
        sequence, `mask_BxLxS` its real tokens. Returns (output, the largest score)."""
        out_BxLxNxH, max_score = self._attend(self._queries(x_BxLxD), *memory_kv, mask_BxLxS, causal=False)
        return layers.dropout(self.o(out_BxLxNxH), self.cfg.dropout, rngs), max_score

    def _queries(self, x_BxLxD):
        q = constrain(self.q(x_BxLxD), 'act_batch', 'act_seq', 'act_heads', None)
        return q if self.q_norm is None else self.q_norm(q)

    def _attend(self, q, k, v, mask_BxLxS, causal: bool):
        """Softmax attention by the configured kernel; cuDNN's takes no arbitrary mask and no
        kernel but the einsum form soft-caps."""
        impl = attention_impl(self.cfg.attention, q.dtype)
        if self.cfg.attn_softcap > 0:
            impl = 'einsum'
        elif impl == 'cudnn' and not causal:
            impl = 'xla'
        if impl == 'einsum':
            out_BxLxNxH, max_score = attention_einsum(q, k, v, mask_BxLxS, self.scale, self.cfg.attn_softcap)
        else:
            out_BxLxNxH = jax.nn.dot_product_attention(
                q, k, v, is_causal=causal, mask=None if causal else mask_BxLxS[:, None],
                scale=self.scale, implementation=impl)
            max_score = max_attention_score(q, k, mask_BxLxS, self.scale)
        return constrain(out_BxLxNxH, 'act_batch', 'act_seq', 'act_heads', None), max_score


class MLP(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        d, f = cfg.d_model, cfg.d_ff
        self.cfg = cfg
        std = _hidden_std(cfg)
        self.up = layers.Dense((d,), (f,), ('embed', 'mlp'), std=std, use_bias=cfg.use_bias, rngs=rngs)
        self.gate = (layers.Dense((d,), (f,), ('embed', 'mlp'), std=std, use_bias=cfg.use_bias,
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

    def __call__(self, x_BxLxD, positions, rngs, kv=None, mask_BxLxS=None):
        attended, new_kv, max_score = self.attn(self.attn_norm(x_BxLxD), positions, rngs, kv, mask_BxLxS)
        x_BxLxD = x_BxLxD + attended
        x_BxLxD = x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD), rngs)
        return constrain(x_BxLxD, 'act_batch', 'act_seq', 'act_embed'), (new_kv, max_score)


class Model(nnx.Module):
    """tokens (B, L) int -> logits (B, L, vocab)."""

    def __init__(self, cfg, spec=None, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = layers.embedding(cfg.vocab_size, cfg.d_model, cfg.init_std, rngs)
        self.pos_embed = (nnx.Param(layers.normal(cfg.init_std, ('pos', 'embed'))(
            rngs.params(), (cfg.max_len, cfg.d_model))) if cfg.position == 'learned' else None)
        # Layer i's parameters come from fold_in(key, i) in both layouts, so
        # scan_layers changes the compiled program, not the initial values.
        layer_keys = jax.vmap(functools.partial(jax.random.fold_in, rngs.params()))(jnp.arange(cfg.n_layers))
        if cfg.scan_layers:
            self.blocks = nnx.vmap(lambda key: Block(cfg, rngs=nnx.Rngs(params=key)),
                                   transform_metadata={nnx.PARTITION_NAME: 'layers'})(layer_keys)
        else:
            self.blocks = nnx.List([Block(cfg, rngs=nnx.Rngs(params=k)) for k in layer_keys])
        self.final_norm = _norm(cfg, rngs)
        self.head = (None if cfg.tie_embeddings else
                     layers.Dense((cfg.d_model,), (cfg.vocab_size,), ('embed', 'vocab'),
                                  std=0.0 if cfg.zero_readout else cfg.init_std, use_bias=False, rngs=rngs))

    def __call__(self, tokens_BxL: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.forward_with_stats(tokens_BxL, train=train, rngs=rngs)[0]

    def forward_with_stats(self, tokens_BxL: jax.Array, *, train: bool = False,
                           rngs: nnx.Rngs | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Logits, and what shows an instability before the loss does: the largest
        attention score over every layer and head (train.py logs it as attn_logit_max)."""
        rngs = rngs if train else None  # dropout only while training
        logits, _, max_score = self._forward(tokens_BxL, np.arange(tokens_BxL.shape[1]), rngs, None)
        return logits, {'attn_logit_max': max_score}

    def activations(self, tokens_BxL: jax.Array) -> dict[str, jax.Array]:
        """Every recorded activation of a forward pass (embedding, blocks, logits)."""
        seen = {}
        self._forward(tokens_BxL, np.arange(tokens_BxL.shape[1]), None, None, seen.__setitem__)
        return seen

    def init_cache(self, batch: int, length: int, dtype=jnp.float32) -> dict[str, jax.Array]:
        """Empty keys and values for `length` positions: (n_layers, batch, length, kv heads, head_dim)."""
        cfg = self.cfg
        shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.d_model // cfg.n_heads)
        return {'k': jnp.zeros(shape, dtype), 'v': jnp.zeros(shape, dtype)}

    def decode(self, tokens_BxT: jax.Array, cache: dict, positions_BxT: jax.Array, key_positions_BxS: jax.Array,
               index) -> tuple[jax.Array, dict]:
        """Logits for T new tokens written at cache slots index..index+T-1, and
        the updated cache: a prompt at once (prefill), then one token a step.
        Rows may be left-padded: a slot's position is key_positions_BxS (< 0 for padding)."""
        return self._forward(tokens_BxT, positions_BxT, None, (cache['k'], cache['v'], index, key_positions_BxS))[:2]

    def _forward(self, tokens_BxL, positions, rngs, kv, record=None):
        """`record(name, activation)`, if given, sees the embedding output, each
        block's output (looped layers) and the logits: a muP coordinate check."""
        record = record or (lambda name, x: None)
        cfg = self.cfg
        x_BxLxD = embed_tokens(cfg, self.embed, self.pos_embed, tokens_BxL, positions, rngs)
        record('embed', x_BxLxD)
        x_BxLxD, new_kv, max_score = self._layers(x_BxLxD, positions_of(cfg, positions), rngs, kv, record)
        x_BxLxD = self.final_norm(x_BxLxD)
        logits_BxLxV = self.embed.attend(x_BxLxD) if self.head is None else self.head(x_BxLxD)
        multiplier = cfg.output_mult / width_mult(cfg)  # muP's readout multiplier, times the output's own
        if multiplier != 1:
            logits_BxLxV = logits_BxLxV * multiplier
        if cfg.logit_softcap > 0:
            logits_BxLxV = cfg.logit_softcap * jnp.tanh(logits_BxLxV / cfg.logit_softcap)
        logits_BxLxV = constrain(logits_BxLxV, 'act_batch', 'act_seq', 'act_vocab')
        record('logits', logits_BxLxV)
        return logits_BxLxV, None if new_kv is None else {'k': new_kv[0], 'v': new_kv[1]}, max_score

    def _layers(self, x_BxLxD, positions, rngs, kv, record):
        """The blocks, looped or scanned, each optionally rematerialised (in
        training). Layer i's dropout key is fold_in(key, i) in both layouts.
        `kv` = (k_cache, v_cache, index, key_positions) stacks the layers' caches.
        Returns (output, (k_cache, v_cache) or None, the largest attention score of any layer)."""
        cfg = self.cfg
        key = rngs.dropout() if rngs is not None and cfg.dropout > 0 else None
        k_all, v_all, extra = (None, None, None) if kv is None else (kv[0], kv[1], kv[2:])

        def layer(graphdef, x_BxLxD, state, positions, i, k_layer, v_layer):
            layer_rngs = None if key is None else nnx.Rngs(dropout=jax.random.fold_in(key, i))
            layer_kv = None if k_layer is None else (k_layer, v_layer, *extra)
            return nnx.merge(graphdef, state)(x_BxLxD, positions, layer_rngs, layer_kv)

        if cfg.remat != 'none' and kv is None:
            layer = jax.checkpoint(layer, policy=REMAT_POLICIES[cfg.remat], static_argnums=(0,))
        if cfg.scan_layers:
            graphdef, stacked = nnx.split(self.blocks)
            step = lambda x, xs: layer(graphdef, x, xs[0], positions, *xs[1:])
            x_BxLxD, (new_kv, max_score_L) = jax.lax.scan(step, x_BxLxD, (stacked, jnp.arange(cfg.n_layers),
                                                                          k_all, v_all))
            return x_BxLxD, new_kv, jnp.max(max_score_L)
        updated, max_scores = [], []
        for i, block in enumerate(self.blocks):
            graphdef, state = nnx.split(block)
            x_BxLxD, (new_kv, max_score) = layer(graphdef, x_BxLxD, state, positions, i,
                                                 None if kv is None else k_all[i], None if kv is None else v_all[i])
            record(f'block{i}', x_BxLxD)
            updated.append(new_kv)
            max_scores.append(max_score)
        max_score = jnp.max(jnp.stack(max_scores))
        if kv is None:
            return x_BxLxD, None, max_score
        return x_BxLxD, (jnp.stack([k for k, _ in updated]), jnp.stack([v for _, v in updated])), max_score


def embed_tokens(cfg, table: nnx.Embed, pos_table: nnx.Param | None, tokens_BxL, positions, rngs):
    """Token embeddings (times embed_mult), plus the learned position rows (a left-padded
    row's negative positions read row 0), with dropout. The rows are read from the table
    gathered whole (as FSDP gathers any weight before its use), so they come out split by
    batch as the tokens are: read from the table as it is stored (d_model split over fsdp)
    they came out split over d_model, and XLA regathered them whole to split them by batch
    (its "involuntary full rematerialization" on any mesh with fsdp and tensor)."""
    x_BxLxD = jnp.take(constrain(table.embedding[...], None, None), tokens_BxL, axis=0)
    if cfg.embed_mult != 1:
        x_BxLxD = x_BxLxD * cfg.embed_mult
    if pos_table is not None:
        x_BxLxD = x_BxLxD + pos_table[...][jnp.maximum(positions, 0)]
    x_BxLxD = layers.dropout(x_BxLxD, cfg.dropout, rngs)
    return constrain(x_BxLxD, 'act_batch', 'act_seq', 'act_embed')


def _norm(cfg, rngs):
    return layers.norm(cfg.norm, cfg.d_model, eps=cfg.norm_eps, use_bias=cfg.use_bias, rngs=rngs)


def _hidden_std(cfg) -> float:
    """Hidden weights: variance 1 / fan_in under muP, i.e. shrinking with width from the base's."""
    return cfg.init_std / math.sqrt(width_mult(cfg))


def _residual_std(cfg) -> float:
    std = _hidden_std(cfg)
    return std / math.sqrt(2 * cfg.n_layers) if cfg.scale_residual_init else std


# --- counts: models/base.py's param_counts and forward_flops, term by term --------------


def layer_params(cfg) -> tuple[int, int, int]:
    """(one norm, one attention, one MLP) of a Block, term by term (seq2seq's blocks too)."""
    d, f, bias = cfg.d_model, cfg.d_ff, cfg.use_bias
    per_norm = 2 if cfg.norm == 'layernorm' and bias else 1  # scale (+ bias)
    kv = (cfg.n_kv_heads or cfg.n_heads) * (d // cfg.n_heads)  # width of k and of v (grouped-query: < d)
    attention = 2 * d * d + 2 * d * kv + ((2 * d + 2 * kv) if bias else 0)  # q, o; k, v (+ biases)
    attention += 2 * (d // cfg.n_heads) * per_norm if cfg.qk_norm else 0  # q and k norms, one head wide
    n_mlp_in = 2 if cfg.mlp == 'swiglu' else 1
    mlp = (n_mlp_in + 1) * d * f + ((n_mlp_in * f + d) if bias else 0)
    return d * per_norm, attention, mlp


def layer_matmul_weights(cfg) -> tuple[int, int, int]:
    """(q and o; k and v; the MLP's) weights one token meets in one layer: biases and norms
    are not matmuls, and k and v are narrower with grouped-query attention."""
    d = cfg.d_model
    kv = (cfg.n_kv_heads or cfg.n_heads) * (d // cfg.n_heads)
    return 2 * d * d, 2 * d * kv, (3 if cfg.mlp == 'swiglu' else 2) * d * cfg.d_ff


def param_counts(cfg, spec=None) -> dict[str, int]:
    norm, attention, mlp = layer_params(cfg)
    non_embedding = cfg.n_layers * (2 * norm + attention + mlp) + norm   # + final norm
    embedding = cfg.vocab_size * cfg.d_model
    embedding += cfg.max_len * cfg.d_model if cfg.position == 'learned' else 0
    embedding += 0 if cfg.tie_embeddings else cfg.d_model * cfg.vocab_size
    return {'total': embedding + non_embedding, 'embedding': embedding, 'non_embedding': non_embedding}


def forward_flops_per_token(cfg, seq_len: int, causal: bool = True) -> float:
    """Matmul FLOPs per token of one forward pass.

    Weights: 2 per weight (q, k, v, o, MLP, unembedding; k and v are narrower with grouped-query
    attention). Attention context: QK^T and AV are 2 * seq_len * d_model each per layer; causal
    attention needs only the lower triangle, half of it (Kaplan's 2 n_layer n_ctx d_attn).
    XLA computes the full square and masks it, so compare against causal=False.
    """
    weights = cfg.n_layers * sum(layer_matmul_weights(cfg)) + cfg.d_model * cfg.vocab_size
    context = cfg.n_layers * 4 * seq_len * cfg.d_model * (0.5 if causal else 1.0)
    return 2.0 * weights + context


def forward_flops(cfg, spec, causal: bool = True) -> float:
    seq_len = spec.input_shape[0]
    return seq_len * forward_flops_per_token(cfg, seq_len, causal)


def head_params(cfg) -> int:
    """The output head, d_model x vocab: its matmul runs whether or not it is tied to the input embedding."""
    return cfg.d_model * cfg.vocab_size


class Transformer(base.Family):
    name = 'transformer'
    SUPPORTS = frozenset({'mup', 'scan_layers', 'remat', 'kv_cache', 'cudnn'})
