"""Encoder-decoder Transformer for translation ("Attention is all you need", pre-norm).

The encoder is transformer.py's Block attending both ways over the source's real
tokens; the decoder block is the same causal self-attention and MLP with a
cross-attention to the encoder's output between them. Source and target share
one embedding table unless `share_embeddings=False`; the output head is tied to
the target embedding unless `tie_embeddings=False`. Token id data.translation.PAD_ID is
padding: masked out as a key, and weighted 0 in the loss by the data.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from scalelab.core.parallel import constrain
from scalelab.data import translation
from scalelab.models import base, layers, transformer

TASKS = ('seq2seq',)
DEFAULT_DATA = 'translation'
CHOICES = dict(transformer.CHOICES, parametrization=('standard',), remat=('none',),
               attention=('auto', 'xla', 'einsum'))
POSITIVE = ('d_model', 'n_layers', 'n_heads', 'max_len')
# Top-level attributes whose parameters count as embedding parameters (Kaplan et al.).
EMBEDDING_PARAMS = ('embed', 'target_embed', 'pos_embed', 'target_pos_embed', 'head')


def default_config() -> ml_collections.ConfigDict:
    cfg = transformer.default_config()
    cfg.name = 'seq2seq'
    cfg.update(d_model=128, n_layers=2, n_heads=4, max_len=64, position='learned')
    cfg.n_decoder_layers = 0       # 0: n_layers (n_layers is the encoder's depth)
    cfg.share_embeddings = True    # one table for source and target tokens (a joint vocabulary)
    return cfg


def resolve(cfg: ml_collections.ConfigDict) -> None:
    transformer.resolve(cfg)
    if cfg.n_decoder_layers == 0:
        cfg.n_decoder_layers = cfg.n_layers


def validate(cfg: ml_collections.ConfigDict, spec) -> list[str]:
    """The decoder's checks (lengths left to this family's own keys), and the encoder-decoder's."""
    problems = transformer.validate(cfg, dataclasses.replace(spec, input_shape=(1,)))
    if cfg.n_decoder_layers < 0:
        problems.append(f'model.n_decoder_layers={cfg.n_decoder_layers}: must be positive (or 0 for n_layers)')
    if cfg.scan_layers:
        problems.append('model.scan_layers=True: the seq2seq family loops its layers; set it to False')
    for key, length in zip(('data.max_source_len', 'data.max_target_len'), spec.input_shape):
        if cfg.position == 'learned' and length > cfg.max_len:
            problems.append(f'{key}={length}: exceeds model.max_len={cfg.max_len} of the learned position table')
    return problems


class DecoderBlock(nnx.Module):
    """Causal self-attention, cross-attention to the source, MLP; each pre-normed, residual."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.self_block = transformer.Block(cfg, rngs=rngs)  # self-attention and MLP with their norms
        self.cross_norm = transformer._norm(cfg, rngs)
        self.cross_attn = transformer.Attention(cfg, rngs=rngs)

    def __call__(self, x_BxTxD, positions, memory_kv, source_mask_BxTxS, rngs, kv=None):
        block = self.self_block
        attended, new_kv, self_max = block.attn(block.attn_norm(x_BxTxD), positions, rngs, kv)
        x_BxTxD = x_BxTxD + attended
        crossed, cross_max = self.cross_attn.cross(self.cross_norm(x_BxTxD), memory_kv, source_mask_BxTxS, rngs)
        x_BxTxD = x_BxTxD + crossed
        x_BxTxD = x_BxTxD + block.mlp(block.mlp_norm(x_BxTxD), rngs)
        return constrain(x_BxTxD, 'act_batch', 'act_seq', 'act_embed'), new_kv, jnp.maximum(self_max, cross_max)


class Model(nnx.Module):
    """(source (B, S), decoder_inputs (B, T)) int -> logits (B, T, vocab)."""

    def __init__(self, cfg, spec=None, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d = cfg.d_model

        def table(rows, names):
            return layers.normal(cfg.init_std, names)(rngs.params(), (rows, d))

        self.embed = layers.embedding(cfg.vocab_size, d, cfg.init_std, rngs)
        self.target_embed = (None if cfg.share_embeddings else
                             layers.embedding(cfg.vocab_size, d, cfg.init_std, rngs))
        learned = cfg.position == 'learned'
        self.pos_embed = nnx.Param(table(cfg.max_len, ('pos', 'embed'))) if learned else None
        self.target_pos_embed = nnx.Param(table(cfg.max_len, ('pos', 'embed'))) if learned else None
        self.encoder = nnx.List([transformer.Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.encoder_norm = transformer._norm(cfg, rngs)
        self.decoder = nnx.List([DecoderBlock(cfg, rngs=rngs) for _ in range(cfg.n_decoder_layers)])
        self.final_norm = transformer._norm(cfg, rngs)
        self.head = (None if cfg.tie_embeddings else
                     layers.Dense((d,), (cfg.vocab_size,), ('embed', 'vocab'),
                                  std=0.0 if cfg.zero_readout else cfg.init_std, use_bias=False, rngs=rngs))

    def __call__(self, source_BxS, *, decoder_inputs, train: bool = False, rngs: nnx.Rngs | None = None):
        return self.forward_with_stats(source_BxS, decoder_inputs=decoder_inputs, train=train, rngs=rngs)[0]

    def forward_with_stats(self, source_BxS, *, decoder_inputs, train: bool = False, rngs=None):
        """Teacher-forced logits, and the largest attention score of any layer (self or cross)."""
        rngs = rngs if train else None
        memory, source_mask_BxS, enc_max = self._encode(source_BxS, rngs)
        memory_kv = self.memory_kv(memory)
        T = decoder_inputs.shape[1]
        logits, _, dec_max = self._decode(decoder_inputs, np.arange(T), memory_kv, source_mask_BxS, rngs, None)
        return logits, {'attn_logit_max': jnp.maximum(enc_max, dec_max)}

    def encode(self, source_BxS):
        """(the encoder's output, which source positions are real tokens)."""
        memory, source_mask_BxS, _ = self._encode(source_BxS, None)
        return memory, source_mask_BxS

    def memory_kv(self, memory_BxSxD):
        """Every decoder layer's cross-attention keys and values of the encoder's output:
        computed once per source, read at every decoding step."""
        return [block.cross_attn.keys_values(memory_BxSxD) for block in self.decoder]

    def init_cache(self, batch: int, length: int, dtype=jnp.float32) -> dict[str, jax.Array]:
        """Empty self-attention keys and values: (decoder layers, batch, length, kv heads, head_dim)."""
        cfg = self.cfg
        shape = (cfg.n_decoder_layers, batch, length, cfg.n_kv_heads, cfg.d_model // cfg.n_heads)
        return {'k': jnp.zeros(shape, dtype), 'v': jnp.zeros(shape, dtype)}

    def decode(self, tokens_BxT, cache, index, memory_kv, source_mask_BxS):
        """Logits for T target tokens at positions index..index+T-1 given the cache of the
        positions before them, and the updated cache (every row at the same position)."""
        B, T = tokens_BxT.shape
        positions = index + jnp.arange(T)
        key_positions_BxS = jnp.broadcast_to(jnp.arange(cache['k'].shape[2]), (B, cache['k'].shape[2]))
        logits, new_kv, _ = self._decode(tokens_BxT, positions, memory_kv, source_mask_BxS, None,
                                         (cache['k'], cache['v'], index, key_positions_BxS))
        return logits, {'k': new_kv[0], 'v': new_kv[1]}

    def _encode(self, source_BxS, rngs):
        S = source_BxS.shape[1]
        source_mask_BxS = source_BxS != translation.PAD_ID
        # A real query sees every real key; a padding query sees itself (no empty softmax).
        mask_BxSxS = source_mask_BxS[:, None, :] | jnp.eye(S, dtype=bool)[None]
        positions = transformer.positions_of(self.cfg, np.arange(S))
        x_BxSxD = transformer.embed_tokens(self.cfg, self.embed, self.pos_embed, source_BxS, positions.index, rngs)
        max_scores = []
        for block in self.encoder:
            x_BxSxD, (_, max_score) = block(x_BxSxD, positions, rngs, None, mask_BxSxS)
            max_scores.append(max_score)
        return self.encoder_norm(x_BxSxD), source_mask_BxS, jnp.max(jnp.stack(max_scores))

    def _decode(self, tokens_BxT, positions, memory_kv, source_mask_BxS, rngs, kv):
        """`kv` = (k_cache, v_cache, index, key_positions) stacks the decoder layers' caches."""
        cfg = self.cfg
        table = self.embed if self.target_embed is None else self.target_embed
        x_BxTxD = transformer.embed_tokens(cfg, table, self.target_pos_embed, tokens_BxT, positions, rngs)
        cross_mask_BxTxS = jnp.broadcast_to(source_mask_BxS[:, None, :],
                                            (tokens_BxT.shape[0], tokens_BxT.shape[1], source_mask_BxS.shape[1]))
        positions = transformer.positions_of(cfg, positions)
        new_k, new_v, max_scores = [], [], []
        for i, block in enumerate(self.decoder):
            layer_kv = None if kv is None else (kv[0][i], kv[1][i], *kv[2:])
            x_BxTxD, layer_new_kv, max_score = block(x_BxTxD, positions, memory_kv[i], cross_mask_BxTxS, rngs,
                                                     layer_kv)
            max_scores.append(max_score)
            if layer_new_kv is not None:
                new_k.append(layer_new_kv[0])
                new_v.append(layer_new_kv[1])
        x_BxTxD = self.final_norm(x_BxTxD)
        logits_BxTxV = table.attend(x_BxTxD) if self.head is None else self.head(x_BxTxD)
        if cfg.output_mult != 1:
            logits_BxTxV = logits_BxTxV * cfg.output_mult
        if cfg.logit_softcap > 0:
            logits_BxTxV = cfg.logit_softcap * jnp.tanh(logits_BxTxV / cfg.logit_softcap)
        logits_BxTxV = constrain(logits_BxTxV, 'act_batch', 'act_seq', 'act_vocab')
        new_kv = None if kv is None else (jnp.stack(new_k), jnp.stack(new_v))
        return logits_BxTxV, new_kv, jnp.max(jnp.stack(max_scores))


# --- counts: models/base.py's param_counts and forward_flops ---------------------------


def param_counts(cfg, spec=None) -> dict[str, int]:
    """Encoder layers (2 norms, self-attention, MLP), decoder layers (3 norms, self- and
    cross-attention, MLP), a final norm after each; embeddings as the options share them."""
    norm, attention, mlp = transformer.layer_params(cfg)
    non_embedding = (cfg.n_layers * (2 * norm + attention + mlp)
                     + cfg.n_decoder_layers * (3 * norm + 2 * attention + mlp) + 2 * norm)
    d, vocab = cfg.d_model, cfg.vocab_size
    embedding = vocab * d * (1 if cfg.share_embeddings else 2)
    embedding += 2 * cfg.max_len * d if cfg.position == 'learned' else 0  # source and target tables
    embedding += 0 if cfg.tie_embeddings else d * vocab
    return {'total': embedding + non_embedding, 'embedding': embedding, 'non_embedding': non_embedding}


def forward_flops(cfg, spec, causal: bool = True) -> float:
    """Matmul FLOPs of one forward pass over a (source, target) pair of padded lengths.

    Encoder: the decoder-only count per source token with attention both ways. Decoder:
    self-attention and MLP per target token, cross-attention's q and o per target token but
    its k and v once per source token (computed once from the encoder's output), and its
    context 4 d per (target, source) pair; the output head per target token."""
    source_len, target_len = spec.input_shape
    d = cfg.d_model
    q_o, k_v, mlp = transformer.layer_matmul_weights(cfg)
    encoder = cfg.n_layers * source_len * (q_o + k_v + mlp + 2 * source_len * d)
    per_target = 2 * q_o + k_v + mlp  # self-attention, cross q and o, MLP
    decoder = cfg.n_decoder_layers * (target_len * per_target + source_len * k_v
                                      + 2 * target_len * target_len * d * (0.5 if causal else 1.0)
                                      + 2 * target_len * source_len * d)
    return 2.0 * (encoder + decoder + target_len * d * cfg.vocab_size)


class Seq2Seq(base.Family):
    name = 'seq2seq'
    SUPPORTS = frozenset({'kv_cache'})
    head_params = staticmethod(transformer.head_params)
