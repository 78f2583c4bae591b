"""What is learned: the loss a step minimises and the metrics an evaluation reports.

Language modelling (next-symbol cross-entropy; bits per byte for byte-level
text), translation (seq2seq: the target's next-token cross-entropy over real
tokens, token accuracy; BLEU comes from decoding, in translate.py),
classification (cross-entropy, accuracy, top-5 accuracy) and regression (mean
squared error). Training may smooth the labels (Szegedy et al. 2016). Evaluation
sums per batch, so any number of batches (and padded rows, weight 0) averages correctly.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

TASKS = ('lm', 'seq2seq', 'classification', 'regression')
LOGIT_TASKS = ('lm', 'seq2seq', 'classification')  # outputs are logits of a softmax
TOP_K = 5


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model must accept and produce, known from the config alone."""
    task: str
    input_shape: tuple[int, ...]  # one example
    num_outputs: int              # vocabulary, classes, or regression targets
    vocab_source: str = ''        # where a vocabulary comes from, for messages


def _weights(batch: dict, shape) -> jax.Array:
    return batch['weights'] if 'weights' in batch else jnp.ones(shape, jnp.float32)


def per_example_loss(task: str, outputs: jax.Array, batch: dict, label_smoothing: float = 0.0) -> jax.Array:
    """Cross-entropy against the labels (smoothed: mixed with a uniform distribution over
    the outputs), or squared error."""
    outputs = outputs.astype(jnp.float32)
    if task in LOGIT_TASKS and label_smoothing > 0:
        labels = optax.smooth_labels(jax.nn.one_hot(batch['targets'], outputs.shape[-1]), label_smoothing)
        return optax.softmax_cross_entropy(outputs, labels)
    if task in LOGIT_TASKS:
        return optax.softmax_cross_entropy_with_integer_labels(outputs, batch['targets'])
    if task == 'regression':
        return jnp.mean((outputs - batch['targets']) ** 2, axis=-1)
    raise ValueError(f'unknown task {task!r}; valid: {TASKS}')


def loss(task: str, outputs: jax.Array, batch: dict, label_smoothing: float = 0.0) -> jax.Array:
    """The training loss: mean over examples (and positions), over the real ones where the
    batch weights them (translation's padding has weight 0)."""
    losses = per_example_loss(task, outputs, batch, label_smoothing)
    if 'weights' not in batch:
        return losses.mean()
    return jnp.sum(losses * batch['weights']) / jnp.maximum(jnp.sum(batch['weights']), 1.0)


def z_loss(logits: jax.Array) -> jax.Array:
    """Mean of log(Z)^2, Z the softmax's partition function: adding a small multiple to
    the loss keeps log Z near 0 and the logits from drifting (PaLM; Wortsman et al. 2023)."""
    return jnp.mean(jnp.square(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)))


def eval_sums(task: str, outputs: jax.Array, batch: dict) -> dict[str, jax.Array]:
    losses = per_example_loss(task, outputs, batch)
    weights = _weights(batch, losses.shape)
    sums = {'loss_sum': jnp.sum(losses * weights), 'count': jnp.sum(weights)}
    if task == 'seq2seq':
        sums['correct'] = jnp.sum((jnp.argmax(outputs, -1) == batch['targets']) * weights)
    if task == 'classification':
        logits = outputs.astype(jnp.float32)
        labels = batch['targets']
        sums['correct'] = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
        k = min(TOP_K, logits.shape[-1])
        top_k = jax.lax.top_k(logits, k)[1]
        sums['top_k_correct'] = jnp.sum(jnp.any(top_k == labels[..., None], axis=-1) * weights)
    return sums


def summarize(task: str, sums: dict[str, float], bytes_per_token: float | None = None) -> dict[str, float]:
    """Eval metrics from summed counts: eval_loss, and per task bits per byte,
    accuracy and top-5 accuracy, or mean squared error."""
    count = sums['count']
    out = {'eval_loss': sums['loss_sum'] / count}
    if task == 'lm' and bytes_per_token:
        out['eval_bits_per_byte'] = out['eval_loss'] / math.log(2) / bytes_per_token
    if task == 'seq2seq':
        out['eval_token_accuracy'] = sums['correct'] / count
    if task == 'classification':
        out['eval_accuracy'] = sums['correct'] / count
        out[f'eval_top{TOP_K}_accuracy'] = sums['top_k_correct'] / count
    if task == 'regression':
        out['eval_mse'] = out['eval_loss']
    return out
