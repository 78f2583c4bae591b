"""Process-wide JAX settings, applied before the first JAX operation."""
from __future__ import annotations

import os
from pathlib import Path

import jax

DEFAULT_CACHE = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'scalelab' / 'jax_cache'


def configure(*, cpu_devices: int | None = None, cache_dir: str | Path | None = None) -> None:
    """Virtual CPU device count and the persistent compilation cache.

    The cache (default ~/.cache/scalelab/jax_cache, or SCALELAB_COMPILATION_CACHE)
    lets repeated runs and sweep points of the same shape skip compilation.
    """
    if cpu_devices is not None:
        if cpu_devices < 1:
            raise ValueError(f'--cpu-devices={cpu_devices}: must be at least 1')
        jax.config.update('jax_num_cpu_devices', cpu_devices)
    cache = cache_dir or os.environ.get('SCALELAB_COMPILATION_CACHE') or DEFAULT_CACHE
    jax.config.update('jax_compilation_cache_dir', str(cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
