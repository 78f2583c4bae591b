"""Parameter counts, FLOPs per step, and device peaks for MFU.

Counting conventions (Kaplan et al. 2020): a multiply-add is 2 FLOPs; the
backward pass costs twice the forward, so training is 3x forward (about 6N
per token). Embedding parameters are the token and position tables and an
untied output head; everything else is non-embedding.

Two kinds of FLOPs, never mixed:
- counted FLOPs (`train_flops_per_step`): every matmul, attention's context
  and the head included. They measure the hardware: MFU, throughput.
- scaling FLOPs (FLOP_CONVENTION, `scaling_params`): C = 6 N D, the compute of
  every budget, sweep table and scaling-law fit, and of `train.flops`.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from scalelab import files

# --- parameter counts --------------------------------------------------------


def count_params(params: dict, embedding_keys: tuple[str, ...]) -> dict[str, int]:
    """Total / embedding / non-embedding counts from a pure-dict parameter tree."""
    total = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    embedding = sum(int(np.prod(p.shape)) for key in embedding_keys if key in params
                    for p in jax.tree.leaves(params[key]))
    return {'total': total, 'embedding': embedding, 'non_embedding': total - embedding}


def _layer_params(cfg) -> tuple[int, int, int]:
    """(one norm, one attention, one MLP) of models/transformer.py, term by term."""
    d, f, bias = cfg.d_model, cfg.d_ff, cfg.use_bias
    per_norm = 2 if cfg.norm == 'layernorm' and bias else 1  # scale (+ bias)
    kv = (cfg.n_kv_heads or cfg.n_heads) * (d // cfg.n_heads)  # width of k and of v (grouped-query: < d)
    attention = 2 * d * d + 2 * d * kv + ((2 * d + 2 * kv) if bias else 0)  # q, o; k, v (+ biases)
    attention += 2 * (d // cfg.n_heads) * per_norm if cfg.qk_norm else 0  # q and k norms, one head wide
    n_mlp_in = 2 if cfg.mlp == 'swiglu' else 1
    mlp = (n_mlp_in + 1) * d * f + ((n_mlp_in * f + d) if bias else 0)
    return d * per_norm, attention, mlp


def transformer_params(cfg) -> dict[str, int]:
    """Hand count for models/transformer.py, term by term."""
    norm, attention, mlp = _layer_params(cfg)
    non_embedding = cfg.n_layers * (2 * norm + attention + mlp) + norm   # + final norm
    embedding = cfg.vocab_size * cfg.d_model
    embedding += cfg.max_len * cfg.d_model if cfg.position == 'learned' else 0
    embedding += 0 if cfg.tie_embeddings else cfg.d_model * cfg.vocab_size
    return {'total': embedding + non_embedding, 'embedding': embedding, 'non_embedding': non_embedding}


def seq2seq_params(cfg) -> dict[str, int]:
    """Hand count for models/seq2seq.py: encoder layers (2 norms, self-attention, MLP),
    decoder layers (3 norms, self- and cross-attention, MLP), a final norm after each."""
    norm, attention, mlp = _layer_params(cfg)
    non_embedding = (cfg.n_layers * (2 * norm + attention + mlp)
                     + cfg.n_decoder_layers * (3 * norm + 2 * attention + mlp) + 2 * norm)
    d, vocab = cfg.d_model, cfg.vocab_size
    embedding = vocab * d * (1 if cfg.share_embeddings else 2)
    embedding += 2 * cfg.max_len * d if cfg.position == 'learned' else 0  # source and target tables
    embedding += 0 if cfg.tie_embeddings else d * vocab
    return {'total': embedding + non_embedding, 'embedding': embedding, 'non_embedding': non_embedding}


# The compute convention of scaling fits: Kaplan's and Hoffmann's C = 6 N D, with the output
# head counted in N (Porian et al. 2024: leaving the head's FLOPs out shifts the fitted
# exponents, most at small sizes, where the head is a large share of the compute).
# Attention's context FLOPs stay out of C, as in all three. D is always the tokens trained.
FLOP_CONVENTION = ('C = 6 N D; N = non-embedding parameters + the output head (d_model x vocab, tied or not); '
                   'D = tokens trained')


def head_params(model_cfg) -> int:
    """A language model's output head (its matmul runs whether or not it is tied to the input
    embedding); 0 for families whose last layer is already non-embedding."""
    if model_cfg.name in ('transformer', 'seq2seq'):
        return model_cfg.d_model * model_cfg.vocab_size
    if model_cfg.name == 'lstm':
        return (model_cfg.d_hidden + 1) * model_cfg.vocab_size
    return 0


def scaling_params(counts: dict[str, int], model_cfg) -> int:
    """N of FLOP_CONVENTION: non-embedding parameters plus the output head."""
    return counts['non_embedding'] + head_params(model_cfg)


# --- other families, term by term (models/<family>.py) ------------------------


def _dense_layers(dims, bias: bool):
    return sum(a * b + (b if bias else 0) for a, b in zip(dims[:-1], dims[1:]))


def mlp_params(cfg, spec) -> dict[str, int]:
    dims = [math.prod(spec.input_shape)] + [cfg.width] * cfg.depth + [spec.num_outputs]
    return _no_embedding(_dense_layers(dims, cfg.use_bias))


def mlp_forward_flops(cfg, spec) -> float:
    dims = [math.prod(spec.input_shape)] + [cfg.width] * cfg.depth + [spec.num_outputs]
    return 2.0 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def conv_taps(n: int, k: int, stride: int = 1) -> int:
    """Kernel taps that land inside a length-n input, summed over the outputs of a
    SAME-padded convolution: the padding's zeros are no arithmetic. Without
    padding this is k * n_out; 2-D convolutions multiply the two axes' counts."""
    out = -(-n // stride)
    pad_lo = max((out - 1) * stride + k - n, 0) // 2
    return sum(min(i * stride - pad_lo + k, n) - max(i * stride - pad_lo, 0) for i in range(out))


def _cnn_layers(cfg, spec):
    """(c_in, c_out, height, width) of each conv at the resolution it computes."""
    height, width, c_in = spec.input_shape
    out = []
    for i in range(cfg.depth):
        c_out = cfg.channels * 2 ** i
        out.append((c_in, c_out, height, width))
        c_in, height, width = c_out, height // 2, width // 2
    return out, height * width * c_in


def cnn_params(cfg, spec) -> dict[str, int]:
    convs, flat = _cnn_layers(cfg, spec)
    k2 = cfg.kernel_size ** 2
    return _no_embedding(sum(k2 * a * b + b for a, b, _, _ in convs)
                         + _dense_layers([flat, cfg.head_width, spec.num_outputs], True))


def cnn_forward_flops(cfg, spec) -> float:
    """Convolutions: 2 C_in C_out x (taps inside the image), i.e. 2 k_h k_w C_in C_out
    H_out W_out less the padding; then the dense head."""
    convs, flat = _cnn_layers(cfg, spec)
    k = cfg.kernel_size
    return 2.0 * (sum(a * b * conv_taps(h, k) * conv_taps(w, k) for a, b, h, w in convs)
                  + flat * cfg.head_width + cfg.head_width * spec.num_outputs)


def _resnet_convs(cfg, spec):
    """(kernel, stride, c_in, c_out, input height, input width) of every convolution."""
    height, width, c_in = spec.input_shape
    channels = [cfg.width * 2 ** s for s in range(cfg.stages)]
    convs = [(3, 1, c_in, channels[0], height, width)]
    c_in = channels[0]
    for s, c_out in enumerate(channels):
        for b in range(cfg.blocks_per_stage):
            stride = 2 if s > 0 and b == 0 else 1
            convs.append((3, stride, c_in, c_out, height, width))
            if stride != 1 or c_in != c_out:
                convs.append((1, stride, c_in, c_out, height, width))
            height, width = -(-height // stride), -(-width // stride)  # SAME padding
            convs.append((3, 1, c_out, c_out, height, width))
            c_in = c_out
    return convs, c_in


def resnet_params(cfg, spec) -> dict[str, int]:
    convs, c_last = _resnet_convs(cfg, spec)
    per_norm = 0 if cfg.norm == 'none' else 2  # scale and bias per channel (batch statistics are state)
    bias = 1 if cfg.norm == 'none' else 0
    return _no_embedding(sum(k * k * a * b + b * (bias + per_norm) for k, _, a, b, _, _ in convs)
                         + _dense_layers([c_last, spec.num_outputs], True))


def resnet_forward_flops(cfg, spec) -> float:
    convs, c_last = _resnet_convs(cfg, spec)
    return 2.0 * (sum(a * b * conv_taps(h, k, s) * conv_taps(w, k, s) for k, s, a, b, h, w in convs)
                  + c_last * spec.num_outputs)


def lstm_params(cfg, spec) -> dict[str, int]:
    d_in = [cfg.d_embed] + [cfg.d_hidden] * (cfg.n_layers - 1)
    cells = sum(4 * (a * cfg.d_hidden + cfg.d_hidden * cfg.d_hidden + cfg.d_hidden) for a in d_in)
    embedding = cfg.vocab_size * cfg.d_embed + cfg.d_hidden * cfg.vocab_size + cfg.vocab_size
    return {'total': embedding + cells, 'embedding': embedding, 'non_embedding': cells}


def lstm_forward_flops(cfg, spec) -> float:
    """Per time step: four gates of (input + recurrent) matmuls per layer, then the head."""
    d_in = [cfg.d_embed] + [cfg.d_hidden] * (cfg.n_layers - 1)
    per_step = sum(2 * 4 * cfg.d_hidden * (a + cfg.d_hidden) for a in d_in) + 2 * cfg.d_hidden * cfg.vocab_size
    return float(spec.input_shape[0] * per_step)


def _no_embedding(total: int) -> dict[str, int]:
    return {'total': total, 'embedding': 0, 'non_embedding': total}


# --- FLOPs per step ------------------------------------------------------------


def transformer_forward_flops_per_token(cfg, seq_len: int, causal: bool = True) -> float:
    """Matmul FLOPs per token of one forward pass.

    Weights: 2 per weight (q, k, v, o, MLP, unembedding; k and v are narrower with grouped-query attention). Attention context:
    QK^T and AV are 2 * seq_len * d_model each per layer; causal attention
    needs only the lower triangle, half of it (Kaplan's 2 n_layer n_ctx d_attn).
    XLA computes the full square and masks it, so compare against causal=False.
    """
    weights = cfg.n_layers * sum(_layer_matmul_weights(cfg)) + cfg.d_model * cfg.vocab_size
    context = cfg.n_layers * 4 * seq_len * cfg.d_model * (0.5 if causal else 1.0)
    return 2.0 * weights + context


def _layer_matmul_weights(cfg) -> tuple[int, int, int]:
    """(q and o; k and v; the MLP's) weights one token meets in one layer: biases and norms
    are not matmuls, and k and v are narrower with grouped-query attention."""
    d = cfg.d_model
    kv = (cfg.n_kv_heads or cfg.n_heads) * (d // cfg.n_heads)
    return 2 * d * d, 2 * d * kv, (3 if cfg.mlp == 'swiglu' else 2) * d * cfg.d_ff


def seq2seq_forward_flops(cfg, source_len: int, target_len: int, causal: bool = True) -> float:
    """Matmul FLOPs of one forward pass over a (source, target) pair of padded lengths.

    Encoder: the decoder-only count per source token with attention both ways. Decoder:
    self-attention and MLP per target token, cross-attention's q and o per target token but
    its k and v once per source token (computed once from the encoder's output), and its
    context 4 d per (target, source) pair; the output head per target token."""
    d = cfg.d_model
    q_o, k_v, mlp = _layer_matmul_weights(cfg)
    encoder = cfg.n_layers * source_len * (q_o + k_v + mlp + 2 * source_len * d)
    per_target = 2 * q_o + k_v + mlp  # self-attention, cross q and o, MLP
    decoder = cfg.n_decoder_layers * (target_len * per_target + source_len * k_v
                                      + 2 * target_len * target_len * d * (0.5 if causal else 1.0)
                                      + 2 * target_len * source_len * d)
    return 2.0 * (encoder + decoder + target_len * d * cfg.vocab_size)


def param_counts(model_cfg, spec) -> dict[str, int]:
    """Hand count of total / embedding / non-embedding parameters."""
    if model_cfg.name == 'transformer':
        return transformer_params(model_cfg)
    if model_cfg.name == 'seq2seq':
        return seq2seq_params(model_cfg)
    return {'mlp': mlp_params, 'cnn': cnn_params, 'resnet': resnet_params, 'lstm': lstm_params}[model_cfg.name](
        model_cfg, spec)


def forward_flops_per_example(model_cfg, spec, causal: bool = True) -> float:
    """Matmul and convolution FLOPs of one forward pass over one example (a
    sequence, for language models)."""
    if model_cfg.name == 'transformer':
        seq_len = spec.input_shape[0]
        return seq_len * transformer_forward_flops_per_token(model_cfg, seq_len, causal)
    if model_cfg.name == 'seq2seq':
        return seq2seq_forward_flops(model_cfg, *spec.input_shape, causal)
    return {'mlp': mlp_forward_flops, 'cnn': cnn_forward_flops, 'resnet': resnet_forward_flops,
            'lstm': lstm_forward_flops}[model_cfg.name](model_cfg, spec)


def train_flops_per_step(model_cfg, spec, global_batch: int) -> float:
    """Counted FLOPs of one training step (for MFU)."""
    return 3.0 * global_batch * forward_flops_per_example(model_cfg, spec)


def tokens_per_example(spec) -> int:
    """Sequence positions per example for language models, target positions for translation
    (with equal source and target lengths an encoder-decoder's 6 N per target token is its
    arithmetic: each weight sees one token of its side); 1 otherwise (D counts examples)."""
    if spec.task == 'seq2seq':
        return spec.input_shape[1]
    return spec.input_shape[0] if spec.task == 'lm' else 1


def scaling_flops_per_step(model_cfg, spec, global_batch: int) -> float:
    """FLOP_CONVENTION's C of one step: 6 N per token (or example)."""
    n = scaling_params(param_counts(model_cfg, spec), model_cfg)
    return 6.0 * n * global_batch * tokens_per_example(spec)


# --- device peaks ------------------------------------------------------------

# Dense peak FLOP/s per chip. float32 on TPU runs as bf16 passes at XLA's
# default precision; on A100/H100/H200 JAX's default f32 matmul uses TF32.
PEAK_FLOPS = {
    'TPU v4': {'bfloat16': 275e12, 'float32': 275e12},
    'TPU v5 lite': {'bfloat16': 197e12, 'float32': 197e12},
    'TPU v5e': {'bfloat16': 197e12, 'float32': 197e12},
    'TPU v5p': {'bfloat16': 459e12, 'float32': 459e12},
    'TPU v5': {'bfloat16': 459e12, 'float32': 459e12},
    'TPU v6 lite': {'bfloat16': 918e12, 'float32': 918e12},
    'TPU v6e': {'bfloat16': 918e12, 'float32': 918e12},
    'A100': {'bfloat16': 312e12, 'float32': 156e12},
    'H100': {'bfloat16': 989e12, 'float32': 494.5e12},
    'H200': {'bfloat16': 989e12, 'float32': 494.5e12},
}
_CACHE = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'scalelab'


def device_kind(device: jax.Device) -> str | None:
    """The PEAK_FLOPS entry of an accelerator chip (the longest name its kind contains), or None."""
    return next((name for name in sorted(PEAK_FLOPS, key=len, reverse=True) if name in device.device_kind), None)


def device_peak_flops(device: jax.Device, dtype: str) -> float | None:
    """Peak FLOP/s of one accelerator chip from the table, or None if unknown."""
    kind = device_kind(device)
    return None if kind is None else PEAK_FLOPS[kind][dtype]


@dataclasses.dataclass(frozen=True)
class Peak:
    """The FLOP/s an MFU divides by, and where it came from (summary.json records both)."""
    flops: float
    source: str                   # 'vendor table: H100 bfloat16', 'measured matmul (...)', 'SCALELAB_PEAK_FLOPS'
    measured_at: str | None = None  # when a measured peak was last measured (ISO 8601, UTC)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# A run whose own FLOP/s reaches this share of a measured peak re-measures it: the cached
# measurement was likely taken under load (a newcomer's first run beside other work).
REMEASURE_AT = 0.9


def cpu_peak(dtype: str = 'float32', remeasure: bool = False) -> Peak:
    """This host's float matmul FLOP/s: measured once and cached on disk as the highest
    measurement seen, so a measurement taken under load is replaced by the next higher one;
    `remeasure` measures again (and keeps the higher). SCALELAB_PEAK_FLOPS overrides it."""
    if 'SCALELAB_PEAK_FLOPS' in os.environ:
        return Peak(float(os.environ['SCALELAB_PEAK_FLOPS']), 'SCALELAB_PEAK_FLOPS')
    key = f'{platform.node()}|{os.cpu_count()}|{jax.__version__}|{dtype}'
    path = _CACHE / 'cpu_peak.json'
    cached = json.loads(path.read_text()) if path.exists() else {}
    entry = cached.get(key)
    if isinstance(entry, (int, float)):  # the cache's first format: a bare number
        entry = {'flops': float(entry), 'measured_at': None}
    if entry is None or remeasure:
        measured = measure_matmul_flops(jax.devices('cpu')[0], dtype)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
        if entry is None or measured > entry['flops']:
            entry = {'flops': measured, 'measured_at': now}
        cached[key] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_json(path, cached)
    return Peak(entry['flops'], 'measured matmul (highest seen on this host)', entry['measured_at'])


def measure_matmul_flops(device: jax.Device, dtype: str = 'float32', n: int = 2048, reps: int = 5) -> float:
    """Best-of-`reps` FLOP/s of an n x n x n matmul on `device`."""
    a = jax.device_put(jnp.ones((n, n), dtype), device)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best


def total_peak(devices: list[jax.Device], dtype: str, remeasure: bool = False) -> Peak | None:
    """Peak FLOP/s of the whole run: chips summed; CPU devices of one process share its cores."""
    if devices[0].platform == 'cpu':
        one = cpu_peak(dtype, remeasure)
        return dataclasses.replace(one, flops=one.flops * len({d.process_index for d in devices}))
    kind = device_kind(devices[0])
    return None if kind is None else Peak(PEAK_FLOPS[kind][dtype] * len(devices), f'vendor table: {kind} {dtype}')
