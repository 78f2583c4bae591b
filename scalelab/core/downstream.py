"""Downstream scoring: each request's summed log-probability of its continuation given its
context, and the metrics OLMo and lm-eval report from those sums.

A pair is tokenized as lm-eval's `_encode_pair` does (the context's trailing whitespace
moves to the continuation, the whole string is encoded and the context's own tokens are
split off the front), so a BPE merge across the boundary scores as the model saw such
text. An empty context starts from the end-of-text token (a newline byte for a
vocabulary without one). A row is the pair's last `context + 1` tokens: inputs all but
the last, targets all but the first, weight 1 on the continuation's targets. Rows are
sorted by length, padded to a power of two (few compiled shapes) and batched; `put`
places a batch on the mesh (sharded over the batch axes, as evaluation's batches are).

    acc           the choice with the largest summed log-probability is the gold one
    acc_per_char  the same, each sum divided by its continuation's characters
    bpb           the gold continuation's negative log-likelihood in bits per UTF-8 byte
All three are averaged over documents; the continuation is the request's own string.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

NEWLINE_BYTE = 10
MIN_BUCKET = 16


class EncodeError(ValueError):
    """A text the model's tokenizer cannot encode: one line naming the task and document."""


def encode_pair(encode: Callable[[str], list[int]], context: str, continuation: str,
                start_id: int) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as lm-eval splits them."""
    if context == '':
        return [start_id], encode(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode(context + continuation)
    context_ids = encode(context)
    return context_ids, whole[len(context_ids):]


def start_token(tokenizer) -> int:
    return tokenizer.eos_id if tokenizer.eos_id is not None else NEWLINE_BYTE


def encode_task(tokenizer, task) -> list[tuple[list[int], list[int]]]:
    """Every request of every document, in order, encoded; a failure names its document."""
    start = start_token(tokenizer)
    pairs = []
    for doc in task.documents:
        for context, continuation in doc.requests:
            try:
                pairs.append(encode_pair(tokenizer.encode, context, continuation, start))
            except Exception as e:  # each backend raises its own type
                raise EncodeError(f'{task.name} document {doc.doc_id}: the {tokenizer.kind} tokenizer '
                                  f'{tokenizer.name!r} cannot encode it ({type(e).__name__}: {e})') from None
    return pairs


def request_row(pair: tuple[list[int], list[int]], context: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(inputs, targets, scored targets at the end): the pair's last context + 1 tokens."""
    context_ids, continuation_ids = pair
    tokens = np.asarray(context_ids + continuation_ids, np.int32)[-(context + 1):]
    return tokens[:-1], tokens[1:], min(len(continuation_ids), tokens.size - 1)


def bucket(length: int, context: int) -> int:
    return min(context, max(MIN_BUCKET, 1 << max(0, length - 1).bit_length()))


def batches(rows: list, order: np.ndarray, batch: int, context: int):
    """(request indices, padded batch) in `order`; the last batch filled with weight-0 rows."""
    for start in range(0, len(order), batch):
        chosen = order[start:start + batch]
        width = bucket(max(rows[i][0].size for i in chosen), context)
        arrays = {'inputs': np.zeros((batch, width), np.int32), 'targets': np.zeros((batch, width), np.int32),
                  'weights': np.zeros((batch, width), np.float32)}
        for r, i in enumerate(chosen):
            inputs, targets, n_scored = rows[i]
            arrays['inputs'][r, :inputs.size] = inputs
            arrays['targets'][r, :targets.size] = targets
            arrays['weights'][r, targets.size - n_scored:targets.size] = 1.0
        yield chosen, arrays


def row_logprobs(graphdef, params, model_state, batch: dict) -> jax.Array:
    """(B,) summed log-probabilities of each row's weighted targets."""
    logits_BxLxV = nnx.merge(graphdef, params, model_state)(batch['inputs']).astype(jnp.float32)
    logp_BxLxV = jax.nn.log_softmax(logits_BxLxV)
    picked_BxL = jnp.take_along_axis(logp_BxLxV, batch['targets'][..., None], axis=-1)[..., 0]
    return (picked_BxL * batch['weights']).sum(-1)


continuation_logprobs = jax.jit(row_logprobs, static_argnames='graphdef')


def loglikelihoods(forward: Callable[[dict], jax.Array], pairs: list, context: int, batch: int,
                   put: Callable[[dict], dict]) -> np.ndarray:
    """(n_requests,) float64 sums, longest rows first (as lm-eval orders them)."""
    rows = [request_row(p, context) for p in pairs]
    order = np.argsort([-r[0].size for r in rows], kind='stable')
    sums = np.zeros(len(rows))
    for chosen, arrays in batches(rows, order, batch, context):
        sums[chosen] = np.asarray(jax.device_get(forward(put(arrays))), np.float64)[:len(chosen)]
    return sums


def metrics(task, sums: np.ndarray) -> dict:
    """acc, acc_per_char, bpb and n over the task's documents, from the requests' sums in order.
    acc and acc_per_char are None for a task of one choice per document (nothing to choose)."""
    correct, correct_per_char, bits_per_byte = [], [], []
    at = 0
    for doc in task.documents:
        doc_sums = sums[at:at + len(doc.requests)]
        at += len(doc.requests)
        chars = np.array([len(continuation) for _, continuation in doc.requests], np.float64)
        correct.append(int(np.argmax(doc_sums)) == doc.gold)
        correct_per_char.append(int(np.argmax(doc_sums / np.maximum(chars, 1))) == doc.gold)
        gold_bytes = len(doc.requests[doc.gold][1].encode('utf-8'))
        bits_per_byte.append(-doc_sums[doc.gold] / math.log(2) / max(gold_bytes, 1))
    choosing = all(len(doc.requests) > 1 for doc in task.documents)
    return dict(acc=float(np.mean(correct)) if choosing else None,
                acc_per_char=float(np.mean(correct_per_char)) if choosing else None,
                bpb=float(np.mean(bits_per_byte)), n=len(task.documents))


def score_task(task, tokenizer, forward, context: int, batch: int, put) -> tuple[dict, dict]:
    """(metrics, timing: requests, seconds, documents per second) of one task."""
    pairs = encode_task(tokenizer, task)
    began = time.perf_counter()
    sums = loglikelihoods(forward, pairs, context, batch, put)
    seconds = time.perf_counter() - began
    return metrics(task, sums), dict(requests=len(pairs), seconds=seconds,
                                     docs_per_s=len(task.documents) / seconds if seconds else None)
