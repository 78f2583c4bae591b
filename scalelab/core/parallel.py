"""Device mesh, logical-axis rules and shardings.

Parameters and activations carry logical axis names; one rules table maps
them onto the mesh axes (data, fsdp, tensor). Changing the parallelism of a
run therefore changes only the mesh sizes, never the model code.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')  # the batch dimension is split over both

# Logical name -> mesh axis (or tuple of axes, or None for replicated).
RULES: Mapping[str, str | tuple[str, ...] | None] = {
    # parameters
    'vocab': 'tensor',
    'embed': 'fsdp',
    'heads': 'tensor',
    'head_dim': None,
    'mlp': 'tensor',
    'norm': None,
    'pos': None,
    'layers': None,  # the stacked-layers axis of scan_layers
    # Conv kernels' input channels stay whole: with them split over fsdp, the batch
    # over (data, fsdp) and output channels over tensor, XLA's SPMD partitioner gets
    # the backward pass of strided convolutions wrong (jax-ml/jax#16894; caught by
    # tests/test_families.py on a (2, 2, 2) mesh). The kernels are small anyway.
    'conv_in': None,
    'conv_out': 'tensor',
    # activations
    'act_batch': BATCH_AXES,
    'act_seq': None,
    'act_embed': None,
    'act_heads': 'tensor',
    'act_mlp': 'tensor',
    'act_vocab': 'tensor',
    'act_conv': 'tensor',
}


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Mesh sizes with at most one -1 ("the rest") filled in.

    Raises ValueError naming the key and value when the sizes cannot tile
    `num_devices` exactly.
    """
    sizes = {axis: int(mesh_cfg[axis]) for axis in MESH_AXES}
    bad = {a: s for a, s in sizes.items() if s == 0 or s < -1}
    if bad:
        axis, size = next(iter(bad.items()))
        raise ValueError(
            f'mesh.{axis}={size}: each mesh size must be a positive integer or -1 (the rest)')
    rest = [a for a, s in sizes.items() if s == -1]
    if len(rest) > 1:
        raise ValueError(
            f'mesh: at most one axis may be -1, got {", ".join(f"mesh.{a}=-1" for a in rest)}')
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if rest:
        if num_devices % fixed:
            raise ValueError(
                f'mesh: the fixed sizes {_fmt(sizes)} multiply to {fixed}, which does not divide '
                f'the {num_devices} devices, so mesh.{rest[0]}=-1 cannot fill the rest')
        sizes[rest[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f'mesh: {_fmt(sizes)} multiply to {fixed}, but there are {num_devices} devices; '
            f'choose sizes whose product is {num_devices} (or set one of them to -1)')
    return sizes


def _fmt(sizes: Mapping[str, int]) -> str:
    return ' x '.join(f'{a}={s}' for a, s in sizes.items())


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A GSPMD (auto-axis) mesh over all devices, axes in MESH_AXES order."""
    shape = tuple(sizes[a] for a in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int],
                    mesh_sizes: Mapping[str, int]) -> P:
    """PartitionSpec for an array whose dims carry logical `names`.

    A dimension is left replicated when its size does not divide by the mesh
    axes it maps to, or when an earlier dimension already took those axes.
    """
    if len(names) != len(shape):
        raise ValueError(f'logical names {tuple(names)} do not match shape {tuple(shape)}')
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape):
        axes = RULES.get(name) if name is not None else None
        if name is not None and name not in RULES:
            raise KeyError(f'logical axis {name!r} has no sharding rule; known: {sorted(RULES)}')
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        axes = tuple(a for a in axes if mesh_sizes.get(a, 1) > 1 and a not in used)
        if not axes or dim % math.prod(mesh_sizes[a] for a in axes):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return P(*spec)


def _mesh_sizes(mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh) -> dict[str, int]:
    return dict(zip(mesh.axis_names, mesh.axis_sizes))


def variable_shardings(abstract_state: nnx.State, mesh: jax.sharding.Mesh) -> dict:
    """Pure-dict tree of NamedShardings for the Variables of an abstract model state.

    Each Variable's logical names come from its `out_sharding` metadata (set
    by `nnx.with_partitioning`); a Variable without names is replicated.
    """
    sizes = _mesh_sizes(mesh)
    unsharded = []

    def to_sharding(path, var):
        names = var.get_metadata().get('out_sharding')
        if not names:
            return NamedSharding(mesh, P())
        spec = logical_to_spec(names, var.shape, sizes)
        wanted = [n for n in names if n is not None and RULES.get(n)]
        if wanted and all(s is None for s in spec) and math.prod(sizes.values()) > 1:
            unsharded.append('/'.join(map(str, path)))
        return NamedSharding(mesh, spec)

    shardings = nnx.map_state(to_sharding, abstract_state)
    if unsharded:
        logging.info('replicated (dims not divisible by their mesh axes): %s', ', '.join(unsharded))
    return nnx.to_pure_dict(shardings)


def split_over_data(sharding: NamedSharding, shape: Sequence[int]) -> NamedSharding:
    """`sharding` with its first free dimension that divides also split over the
    data axis. Optimizer moments laid out so (ZeRO-1) are updated once, a slice
    per data-parallel device, instead of whole on every device."""
    data = sharding.mesh.shape['data']
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    if data == 1 or 'data' in jax.tree.leaves(spec):
        return sharding
    for i, (axes, dim) in enumerate(zip(spec, shape)):
        if axes is None and dim % data == 0:
            spec[i] = 'data'
            return NamedSharding(sharding.mesh, P(*spec))
    return sharding


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int) -> NamedSharding:
    """Leading (batch) dimension split over (data, fsdp); the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def constrain(x: jax.Array, *names: str | None) -> jax.Array:
    """Sharding constraint by logical names under the current mesh (a no-op without one)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, _mesh_sizes(mesh)))
