"""Parameters to and from files, by name (core.naming): safetensors files and orbax
checkpoints, read onto this process's devices whatever topology wrote them. What training's
init_from, inference, the HF converters and `scalelab.export` share; no pickle anywhere."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

from scalelab.core.naming import flatten, name

METADATA_KEY = 'scalelab.model'


def arrange(flat: dict[str, np.ndarray], target) -> object:
    """`flat` laid out as the tree `target` (arrays or ShapeDtypeStructs), with
    an error listing missing, unexpected and misshapen names."""
    wanted = {name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}
    missing = sorted(set(wanted) - set(flat))
    extra = sorted(set(flat) - set(wanted))
    misshapen = [f'{k} {flat[k].shape} (model: {wanted[k].shape})' for k in sorted(set(wanted) & set(flat))
                 if tuple(flat[k].shape) != tuple(wanted[k].shape)]
    if missing or extra or misshapen:
        problems = ([f'missing {", ".join(missing[:8])}'] if missing else []) + \
                   ([f'unexpected {", ".join(extra[:8])}'] if extra else []) + \
                   ([f'shape {", ".join(misshapen[:8])}'] if misshapen else [])
        raise ValueError('parameters do not fit the model: ' + '; '.join(problems))
    return jax.tree_util.tree_map_with_path(lambda path, leaf: flat[name(path)].astype(leaf.dtype), target)


def write_safetensors(arrays: dict[str, np.ndarray], path: str | Path, metadata: dict | None) -> None:
    """safetensors' save_file, whole or not at all (written beside `path`, then renamed over
    it), leaving the file readable as any other the user writes (save_file creates it 0600)."""
    from safetensors.numpy import save_file
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save(path: str | Path, params, model_cfg: dict | None = None) -> None:
    metadata = {METADATA_KEY: json.dumps(model_cfg)} if model_cfg is not None else None
    write_safetensors(flatten(jax.device_get(params)), path, metadata)


def load(path: str | Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """(name -> array, the model config stored with them or None)."""
    from safetensors import safe_open
    with safe_open(str(path), framework='numpy') as f:
        metadata = f.metadata() or {}
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    return arrays, json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None


def load_params_flat(source: str | Path) -> dict[str, np.ndarray]:
    """name -> array from a .safetensors file, a run's workdir (its latest
    checkpoint) or one checkpoint directory (workdir/checkpoints/<step>).

    A checkpoint is read onto this process's devices whatever topology wrote
    it (the arrays' shapes come from its metadata).
    """
    import orbax.checkpoint as ocp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    source = Path(source)
    if source.suffix == '.safetensors':
        return load(source)[0]
    if (source / 'checkpoints').is_dir():
        with ocp.CheckpointManager((source / 'checkpoints').absolute()) as mgr:
            step = mgr.latest_step()
        if step is None:
            raise FileNotFoundError(f'{source}/checkpoints: no complete checkpoint')
        source = source / 'checkpoints' / str(step)
    if not (source / 'state').is_dir():
        raise FileNotFoundError(f'{source}: not a .safetensors file, a run workdir or a checkpoint directory')
    checkpointer = ocp.StandardCheckpointer()
    state_dir = (source / 'state').absolute()
    replicated = NamedSharding(Mesh(np.array(jax.devices()), ('all',)), PartitionSpec())
    # The handler reads the item's own metadata (the checkpointer would look for a step-level file there)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated),
                          ocp.StandardCheckpointHandler().metadata(state_dir).tree)
    return flatten(deployable(checkpointer.restore(state_dir, target)))


def deployable(state: dict):
    """A restored checkpoint's parameters as its run evaluated them: under schedule-free
    training (an optimizer state holding its iterate average's z and b1) the average,
    optax.contrib.schedule_free_eval_params; otherwise the trained parameters."""
    import types

    import optax

    def nodes(tree):
        yield tree
        children = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else ()
        for child in children:
            yield from nodes(child)
    found = [n for n in nodes(state.get('opt_state')) if isinstance(n, dict) and {'z', 'b1'} <= n.keys()]
    if not found:
        return state['params']
    return optax.contrib.schedule_free_eval_params(types.SimpleNamespace(b1=found[0]['b1'], z=found[0]['z']),
                                                   state['params'])
