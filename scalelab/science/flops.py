"""Parameter counts, FLOPs per step, and device peaks for MFU.

Counting conventions (Kaplan et al. 2020): a multiply-add is 2 FLOPs; the
backward pass costs twice the forward, so training is 3x forward (about 6N
per token). Embedding parameters are the token and position tables and an
untied output head; everything else is non-embedding. Each family counts its
own parameters and forward FLOPs, term by term (models/<family>.py); this
module holds what every family shares: the conventions below, training's 3x,
the tokens of an example, and the peaks MFU divides by.

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

from scalelab import models
from scalelab.core import files

# --- parameter counts --------------------------------------------------------


def count_params(params: dict, embedding_keys: tuple[str, ...]) -> dict[str, int]:
    """Total / embedding / non-embedding counts from a pure-dict parameter tree."""
    total = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    embedding = sum(int(np.prod(p.shape)) for key in embedding_keys if key in params
                    for p in jax.tree.leaves(params[key]))
    return {'total': total, 'embedding': embedding, 'non_embedding': total - embedding}


# The compute convention of scaling fits: Kaplan's and Hoffmann's C = 6 N D, with the output
# head counted in N (Porian et al. 2024: leaving the head's FLOPs out shifts the fitted
# exponents, most at small sizes, where the head is a large share of the compute).
# Attention's context FLOPs stay out of C, as in all three. D is always the tokens trained.
FLOP_CONVENTION = ('C = 6 N D; N = non-embedding parameters + the output head (d_model x vocab, tied or not); '
                   'D = tokens trained')


def head_params(model_cfg) -> int:
    """A model's output head (its matmul runs whether or not it is tied to the input embedding);
    0 for families whose last layer is already non-embedding."""
    return models.family(model_cfg.name).head_params(model_cfg)


def scaling_params(counts: dict[str, int], model_cfg) -> int:
    """N of FLOP_CONVENTION: non-embedding parameters plus the output head."""
    return counts['non_embedding'] + head_params(model_cfg)


# --- FLOPs per step ------------------------------------------------------------


def param_counts(model_cfg, spec) -> dict[str, int]:
    """Hand count of total / embedding / non-embedding parameters (the family's own)."""
    return models.family(model_cfg.name).param_counts(model_cfg, spec)


def forward_flops_per_example(model_cfg, spec, causal: bool = True) -> float:
    """Matmul and convolution FLOPs of one forward pass over one example (a
    sequence, for language models): the family's own count."""
    return models.family(model_cfg.name).forward_flops(model_cfg, spec, causal)


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
