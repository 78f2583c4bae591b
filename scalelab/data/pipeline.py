"""Host batches -> global sharded arrays; each process supplies only its own rows."""
from __future__ import annotations

import jax
import numpy as np

from scalelab.core import parallel


def process_rows(mesh: jax.sharding.Mesh, global_batch: int) -> slice:
    """The contiguous rows of the global batch that live on this process's devices."""
    sharding = parallel.batch_sharding(mesh, 1)
    index_map = sharding.addressable_devices_indices_map((global_batch,))
    spans = {(idx[0].start or 0, global_batch if idx[0].stop is None else idx[0].stop)
             for idx in index_map.values()}
    lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
    covered = sum(e - s for s, e in spans)
    if covered != hi - lo:
        raise ValueError(f'rows of process {jax.process_index()} are not contiguous: {sorted(spans)}')
    return slice(lo, hi)


def to_global(mesh: jax.sharding.Mesh, local: dict[str, np.ndarray], global_batch: int) -> dict[str, jax.Array]:
    """Assemble per-process rows into arrays sharded over the batch axes."""
    return {
        name: jax.make_array_from_process_local_data(
            parallel.batch_sharding(mesh, rows.ndim), rows, (global_batch, *rows.shape[1:]))
        for name, rows in local.items()
    }
