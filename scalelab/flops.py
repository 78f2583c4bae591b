"""Parameter counts, FLOPs per step, and device peaks for MFU.

Counting conventions (Kaplan et al. 2020): a multiply-add is 2 FLOPs; the
backward pass costs twice the forward, so training is 3x forward (about 6N
per token). Embedding parameters are the token and position tables and an
untied output head; everything else is non-embedding.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# --- parameter counts --------------------------------------------------------


def count_params(params: dict, embedding_keys: tuple[str, ...]) -> dict[str, int]:
    """Total / embedding / non-embedding counts from a pure-dict parameter tree."""
    total = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    embedding = sum(int(np.prod(p.shape)) for key in embedding_keys if key in params
                    for p in jax.tree.leaves(params[key]))
    return {'total': total, 'embedding': embedding, 'non_embedding': total - embedding}


def transformer_params(cfg) -> dict[str, int]:
    """Hand count for models/transformer.py, term by term."""
    d, f, n_layers, vocab = cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.vocab_size
    bias = cfg.use_bias
    norm = d * (2 if cfg.norm == 'layernorm' and bias else 1)
    attention = 4 * d * d + (4 * d if bias else 0)          # q, k, v, o (+ biases)
    n_mlp_in = 2 if cfg.mlp == 'swiglu' else 1
    mlp = (n_mlp_in + 1) * d * f + ((n_mlp_in * f + d) if bias else 0)
    non_embedding = n_layers * (2 * norm + attention + mlp) + norm   # + final norm
    embedding = vocab * d
    embedding += cfg.max_len * d if cfg.position == 'learned' else 0
    embedding += 0 if cfg.tie_embeddings else d * vocab
    return {'total': embedding + non_embedding, 'embedding': embedding, 'non_embedding': non_embedding}


# --- FLOPs -------------------------------------------------------------------


def transformer_forward_flops_per_token(cfg, seq_len: int, causal: bool = True) -> float:
    """Matmul FLOPs per token of one forward pass.

    Weights: 2 per weight (q, k, v, o, MLP, unembedding). Attention context:
    QK^T and AV are 2 * seq_len * d_model each per layer; causal attention
    needs only the lower triangle, half of it (Kaplan's 2 n_layer n_ctx d_attn).
    XLA computes the full square and masks it, so compare against causal=False.
    """
    d, f = cfg.d_model, cfg.d_ff
    n_mlp = 3 if cfg.mlp == 'swiglu' else 2
    weights = cfg.n_layers * (4 * d * d + n_mlp * d * f) + d * cfg.vocab_size
    context = cfg.n_layers * 4 * seq_len * d * (0.5 if causal else 1.0)
    return 2.0 * weights + context


def forward_flops_per_example(model_cfg, seq_len: int, causal: bool = True) -> float:
    if model_cfg.name == 'transformer':
        return seq_len * transformer_forward_flops_per_token(model_cfg, seq_len, causal)
    raise KeyError(f'no FLOP count for model.name={model_cfg.name!r}')


def train_flops_per_step(model_cfg, seq_len: int, global_batch: int) -> float:
    return 3.0 * global_batch * forward_flops_per_example(model_cfg, seq_len)


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


def device_peak_flops(device: jax.Device, dtype: str) -> float | None:
    """Peak FLOP/s of one accelerator chip from the table, or None if unknown."""
    for name in sorted(PEAK_FLOPS, key=len, reverse=True):  # longest match first
        if name in device.device_kind:
            return PEAK_FLOPS[name][dtype]
    return None


def cpu_peak_flops(dtype: str = 'float32') -> float:
    """This host's float matmul FLOP/s, measured once and cached on disk.

    SCALELAB_PEAK_FLOPS overrides it (useful where measuring would be noisy).
    """
    if 'SCALELAB_PEAK_FLOPS' in os.environ:
        return float(os.environ['SCALELAB_PEAK_FLOPS'])
    key = f'{platform.node()}|{os.cpu_count()}|{jax.__version__}|{dtype}'
    path = _CACHE / 'cpu_peak.json'
    cached = json.loads(path.read_text()) if path.exists() else {}
    if key not in cached:
        cached[key] = measure_matmul_flops(jax.devices('cpu')[0], dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f'.{os.getpid()}.tmp')
        tmp.write_text(json.dumps(cached, indent=1))
        tmp.replace(path)
    return cached[key]


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


def total_peak_flops(devices: list[jax.Device], dtype: str) -> float | None:
    """Peak FLOP/s of the whole run: chips summed; CPU devices of one process share its cores."""
    if devices[0].platform == 'cpu':
        return cpu_peak_flops(dtype) * len({d.process_index for d in devices})
    per_chip = device_peak_flops(devices[0], dtype)
    return None if per_chip is None else per_chip * len(devices)
