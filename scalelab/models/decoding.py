"""Greedy and beam search for the encoder-decoder (models/seq2seq.py).

The source is encoded once and every decoder layer's cross-attention keys and values
are projected once (Model.memory_kv); the decoder's self-attention keys and values
are cached a position at a time. `cached=False` instead runs the whole decoder over
the tokens so far at every step (causal, so position t sees the same tokens): the
reference the cache must equal. Beam search keeps `beam_size` live hypotheses by
log-probability and the `beam_size` best finished ones by log-probability over
GNMT's length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016); it stops when no
live hypothesis can beat the finished ones. beam_size 1 is greedy search.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from scalelab.data.translation import EOS_ID as END
from scalelab.data.translation import PAD_ID as PAD

START = END  # <|endoftext|> starts the decoder's input and ends a sentence


def no_padding(logits_RxV):
    """Logits with PAD made impossible: padding is what follows a sentence, never a word of it
    (a search that could emit it would count (PAD, END), an empty translation, as an answer)."""
    return logits_RxV.at[:, PAD].set(-jnp.inf)


def _stepper(model, source_BxS, copies: int, max_len: int, cached: bool):
    """(initial cache, step(cache, tokens_RxL1, t) -> (logits at position t (R, V), cache)) for
    R = B * copies rows, row b * copies + j decoding source b."""
    memory_BxSxD, source_mask_BxS = model.encode(source_BxS)
    repeat = lambda x: jnp.repeat(x, copies, axis=0)
    memory_kv = jax.tree.map(repeat, model.memory_kv(memory_BxSxD))
    source_mask_RxS = repeat(source_mask_BxS)
    if not cached:
        source_RxS = repeat(source_BxS)

        def full(cache, tokens_RxL1, t):
            logits_RxLxV = model(source_RxS, decoder_inputs=tokens_RxL1[:, :max_len])
            return no_padding(jax.lax.dynamic_index_in_dim(logits_RxLxV, t, axis=1, keepdims=False)), cache
        return {}, full

    def step(cache, tokens_RxL1, t):
        token_Rx1 = jax.lax.dynamic_slice_in_dim(tokens_RxL1, t, 1, axis=1)
        logits_Rx1xV, cache = model.decode(token_Rx1, cache, t, memory_kv, source_mask_RxS)
        return no_padding(logits_Rx1xV[:, 0]), cache
    return model.init_cache(source_BxS.shape[0] * copies, max_len, memory_BxSxD.dtype), step


def greedy(model, source_BxS, max_len: int, cached: bool = True):
    """(B, max_len) tokens: the most likely token at each step until the end token, then padding."""
    B = source_BxS.shape[0]
    cache, step = _stepper(model, source_BxS, 1, max_len, cached)
    tokens_BxL1 = jnp.full((B, max_len + 1), PAD, jnp.int32).at[:, 0].set(START)

    def body(carry):
        t, tokens_BxL1, done_B, cache = carry
        logits_BxV, cache = step(cache, tokens_BxL1, t)
        token_B = jnp.where(done_B, PAD, jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32))
        return t + 1, tokens_BxL1.at[:, t + 1].set(token_B), done_B | (token_B == END), cache

    carry = (0, tokens_BxL1, jnp.zeros(B, bool), cache)
    _, tokens_BxL1, _, _ = jax.lax.while_loop(lambda c: (c[0] < max_len) & ~jnp.all(c[2]), body, carry)
    return tokens_BxL1[:, 1:]


def length_penalty(length, alpha: float):
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(model, source_BxS, max_len: int, beam_size: int, alpha: float, cached: bool = True):
    """(B, max_len) tokens of the best finished hypothesis per source (the best live one if none finished)."""
    B, W = source_BxS.shape[0], beam_size
    cache, step = _stepper(model, source_BxS, W, max_len, cached)
    first = jnp.full((B, W, max_len + 1), PAD, jnp.int32).at[:, :, 0].set(START)
    alive_logp_BxW = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (W - 1)), (B, 1))  # one start, not W copies
    neg_BxW = jnp.full((B, W), -jnp.inf)

    def gather(x_BxKx, index_BxW):
        return jnp.take_along_axis(x_BxKx, index_BxW.reshape(*index_BxW.shape, *([1] * (x_BxKx.ndim - 2))), axis=1)

    def body(carry):
        t, alive_BxWxL1, alive_logp_BxW, finished_BxWxL1, finished_score_BxW, cache = carry
        logits_RxV, cache = step(cache, alive_BxWxL1.reshape(B * W, -1), t)
        V = logits_RxV.shape[-1]
        logp_BxWxV = jax.nn.log_softmax(logits_RxV.astype(jnp.float32)).reshape(B, W, V)
        candidates_BxWV = (alive_logp_BxW[..., None] + logp_BxWxV).reshape(B, W * V)
        top_logp_Bx2W, top_BX2W = jax.lax.top_k(candidates_BxWV, 2 * W)  # W of them do not end, at least
        beam_Bx2W, token_Bx2W = top_BX2W // V, (top_BX2W % V).astype(jnp.int32)
        seqs_Bx2WxL1 = gather(alive_BxWxL1, beam_Bx2W).at[:, :, t + 1].set(token_Bx2W)
        ends_Bx2W = token_Bx2W == END
        alive_logp_BxW, keep_BxW = jax.lax.top_k(jnp.where(ends_Bx2W, -jnp.inf, top_logp_Bx2W), W)
        alive_BxWxL1 = gather(seqs_Bx2WxL1, keep_BxW)
        rows_R = (jnp.arange(B)[:, None] * W + gather(beam_Bx2W, keep_BxW)).reshape(-1)
        cache = jax.tree.map(lambda c: jnp.take(c, rows_R, axis=1), cache)  # (layers, R, ...)
        ended_Bx2W = jnp.where(ends_Bx2W, top_logp_Bx2W / length_penalty(t + 1.0, alpha), -jnp.inf)
        finished_score_BxW, best_BxW = jax.lax.top_k(jnp.concatenate([finished_score_BxW, ended_Bx2W], 1), W)
        finished_BxWxL1 = gather(jnp.concatenate([finished_BxWxL1, seqs_Bx2WxL1], 1), best_BxW)
        return t + 1, alive_BxWxL1, alive_logp_BxW, finished_BxWxL1, finished_score_BxW, cache

    def live(carry):
        """Some source's best live hypothesis could still beat its worst finished one (the
        log-probability only falls; the penalty is largest at max_len)."""
        t, _, alive_logp_BxW, _, finished_score_BxW, _ = carry
        bound_B = jnp.max(alive_logp_BxW, axis=1) / length_penalty(float(max_len), alpha)
        return (t < max_len) & jnp.any(bound_B > jnp.min(finished_score_BxW, axis=1))

    carry = (0, first, alive_logp_BxW, first, neg_BxW, cache)
    _, alive_BxWxL1, alive_logp_BxW, finished_BxWxL1, finished_score_BxW, _ = jax.lax.while_loop(live, body, carry)
    none_finished_B = jnp.isneginf(finished_score_BxW[:, 0])
    best_BxL1 = jnp.where(none_finished_B[:, None], alive_BxWxL1[:, 0], finished_BxWxL1[:, 0])
    return best_BxL1[:, 1:]


@functools.partial(jax.jit, static_argnames=('graphdef', 'max_len', 'beam_size', 'alpha', 'cached'))
def translate_ids(graphdef, params, model_state, source_BxS, *, max_len: int, beam_size: int = 1,
                  alpha: float = 0.6, cached: bool = True):
    """Token ids (B, max_len) translating each source row: greedy for beam_size 1, else beam search."""
    model = nnx.merge(graphdef, params, model_state)
    if beam_size == 1:
        return greedy(model, source_BxS, max_len, cached)
    return beam_search(model, source_BxS, max_len, beam_size, alpha, cached)


def strip(ids) -> list[int]:
    """A hypothesis's tokens before its end token."""
    out = []
    for i in ids:
        if int(i) in (END, PAD):
            break
        out.append(int(i))
    return out
