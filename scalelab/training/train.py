"""Train state and the pure train / eval steps.

The state is a plain dict of arrays (step, params, model_state, opt_state),
so it crosses `jit`, shards, and checkpoints like any pytree. Inside a step
the model is rebuilt with `nnx.merge(graphdef, params, model_state)`.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from scalelab import models
from scalelab.core import parallel, tasks
from scalelab.training import diagnostics, optim

TrainState = dict  # {'step': int32[], 'params': tree, 'model_state': tree, 'opt_state': tree}


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """What the step functions close over: static, hashable."""
    graphdef: nnx.GraphDef
    task: str
    tx: optax.GradientTransformation
    lr: optax.Schedule
    seed: int
    microbatches: int
    compute_dtype: str
    norms: str = 'none'  # diagnostics.MODES: which norms each step reports
    norm_groups: tuple = ()  # diagnostics.layout of the parameters
    z_loss: float = 0.0  # weight of log(Z)^2 in the loss (tasks.z_loss)
    label_smoothing: float = 0.0  # of the training loss's labels (tasks.per_example_loss)
    logit_stats: bool = False  # report the output-logit RMS and the largest attention score
    noise_scale: bool = False  # report the microbatches' and the step's squared gradient norms (noise_scale.py)


def init_state(model_cfg, spec: tasks.DataSpec, seed: int, tx: optax.GradientTransformation) -> TrainState:
    model = models.build(model_cfg, spec, jax.random.key(seed))
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    return {'step': jnp.zeros((), jnp.int32), 'params': params,
            'model_state': nnx.to_pure_dict(model_state), 'opt_state': tx.init(params)}


def state_shardings(abstract_state: TrainState, abstract_params: nnx.State, abstract_rest: nnx.State,
                    tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> TrainState:
    """Shardings for every leaf of the state: parameters by the logical rules,
    optimizer moments like their parameters and also split over the data axis
    (parallel.split_over_data), scalars replicated."""
    params = parallel.variable_shardings(abstract_params, mesh)
    replicated = parallel.replicated(mesh)
    # Parameters an optimizer leaves out (frozen, or another group's) hold a MaskedNode: keep it.
    # A statistic in a parameter's place but not of its shape (Adafactor's row and column
    # means, its placeholders) is small: replicated.
    def like_param(leaf, sharding, param):
        if isinstance(leaf, optax.MaskedNode):
            return leaf
        return parallel.split_over_data(sharding, leaf.shape) if leaf.shape == param.shape else replicated
    opt_state = optax.tree_map_params(
        tx, like_param, abstract_state['opt_state'], params, abstract_state['params'],
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, (NamedSharding, optax.MaskedNode)))
    return {'step': replicated, 'params': params,
            'model_state': parallel.variable_shardings(abstract_rest, mesh), 'opt_state': opt_state}


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run needs before its first step, derived from (config, mesh)."""
    spec: StepSpec
    init: Callable[[], TrainState]  # pure; jit it with out_shardings=shardings
    abstract_state: TrainState      # ShapeDtypeStructs
    shardings: TrainState           # NamedShardings


def setup(plan, mesh: jax.sharding.Mesh) -> Setup:
    """Optimizer, abstract state and its shardings for a plan (scalelab.plan)."""
    cfg, data_spec = plan.cfg, plan.spec
    tx, lr = optim.make(cfg.optim, cfg.train.steps, groups=models.lr_groups(cfg.model), freeze=cfg.train.freeze,
                        matrices=models.hidden_matrices(cfg.model))
    graphdef, abstract_params, abstract_rest = models.split_abstract(cfg.model, data_spec)
    init = functools.partial(init_state, cfg.model, data_spec, cfg.seed, tx)
    abstract_state = jax.eval_shape(init)
    shardings = state_shardings(abstract_state, abstract_params, abstract_rest, tx, mesh)
    spec = StepSpec(graphdef=graphdef, task=data_spec.task, tx=tx, lr=lr, seed=cfg.seed,
                    microbatches=cfg.train.microbatches, compute_dtype=cfg.train.compute_dtype,
                    norms=cfg.log.norms, z_loss=cfg.train.z_loss, logit_stats=cfg.log.logit_stats,
                    label_smoothing=cfg.train.label_smoothing, noise_scale=cfg.log.noise_scale,
                    norm_groups=diagnostics.layout(abstract_state['params'], models.stacked_prefix(cfg.model)))
    return Setup(spec, init, abstract_state, shardings)


@dataclasses.dataclass(frozen=True)
class Built:
    """A plan made runnable on devices: the mesh, the prepared state and the compiled steps."""
    mesh: jax.sharding.Mesh
    prepared: Setup
    train_fn: Callable
    eval_fn: Callable
    compile_s: float


def build(plan, devices, train_batch: dict, eval_batch: dict | None = None) -> Built:
    """The one build sequence (training, muP's coordinate check and the benchmarks share it):
    the plan's mesh over `devices`, its optimizer and sharded abstract state, and the steps
    compiled ahead of time for batches shaped like `train_batch` (ShapeDtypeStructs)."""
    mesh = parallel.make_mesh(plan.cfg.mesh, devices)
    prepared = setup(plan, mesh)
    start = time.perf_counter()
    train_fn, eval_fn = compile_steps(prepared.spec, mesh, prepared.shardings, prepared.abstract_state,
                                      train_batch, eval_batch)
    return Built(mesh, prepared, train_fn, eval_fn, time.perf_counter() - start)


def cast_floats(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _forward(spec: StepSpec, params, model_state, batch, *, train: bool, rngs, stats: bool = False):
    """Model outputs, the model state after the call (batch statistics move in training),
    and with `stats` what the model reports beside its outputs (models with attention)."""
    model = nnx.merge(spec.graphdef, cast_floats(params, jnp.dtype(spec.compute_dtype)), model_state)
    inputs = batch['inputs']
    if jnp.issubdtype(inputs.dtype, jnp.floating):
        inputs = inputs.astype(jnp.dtype(spec.compute_dtype))
    extra = {'decoder_inputs': batch['decoder_inputs']} if 'decoder_inputs' in batch else {}  # translation
    if stats and hasattr(model, 'forward_with_stats'):
        outputs, model_stats = model.forward_with_stats(inputs, train=train, rngs=rngs, **extra)
    else:
        outputs, model_stats = model(inputs, train=train, rngs=rngs, **extra), {}
    _, _, new_model_state = nnx.split(model, nnx.Param, ...)
    return outputs, nnx.to_pure_dict(new_model_state), model_stats


def _loss_fn(spec: StepSpec, params, model_state, batch, dropout_key):
    """The loss to differentiate, and beside it (aux) the model state and the step's
    statistics: the task loss alone, the z-loss term, logit sizes."""
    # The Rngs is made here, inside the differentiated function, whose trace may mutate it.
    outputs, new_model_state, stats = _forward(spec, params, model_state, batch, train=True,
                                               rngs=nnx.Rngs(dropout=dropout_key), stats=spec.logit_stats)
    loss = tasks.loss(spec.task, outputs, batch, spec.label_smoothing)
    if spec.logit_stats and spec.task in tasks.LOGIT_TASKS:
        stats['logit_rms'] = jnp.sqrt(jnp.mean(jnp.square(outputs.astype(jnp.float32))))
    total = loss
    if spec.z_loss > 0:
        stats['z_loss'] = spec.z_loss * tasks.z_loss(outputs)
        total = loss + stats['z_loss']
    return total, (new_model_state, {'loss': loss, **stats})


def _microbatches(batch: dict, n: int) -> dict:
    """(B, ...) -> (n, B/n, ...) keeping each device's rows on that device."""
    def split(x):
        x = x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
        return parallel.constrain(x, None, 'act_batch', *([None] * (x.ndim - 2)))
    return jax.tree.map(split, batch)


def train_step(spec: StepSpec, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    step_key = jax.random.fold_in(jax.random.key(spec.seed), state['step'])
    grad_fn = jax.value_and_grad(_loss_fn, argnums=1, has_aux=True)
    params = state['params']

    if spec.microbatches == 1:
        (_, (model_state, stats)), grads = grad_fn(spec, params, state['model_state'], batch, step_key)
    else:
        def accumulate(carry, indexed):
            grad_sum, model_state = carry
            i, micro = indexed
            (_, (model_state, stats)), grads = grad_fn(spec, params, model_state, micro,
                                                       jax.random.fold_in(step_key, i))
            if spec.noise_scale:  # one microbatch's squared gradient norm
                stats = {**stats, 'gns_small_sq': optax.tree.norm(grads, squared=True)}
            return (jax.tree.map(jnp.add, grad_sum, grads), model_state), stats

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, model_state), stats_M = jax.lax.scan(
            accumulate, (zeros, state['model_state']),
            (jnp.arange(spec.microbatches), _microbatches(batch, spec.microbatches)))
        # Means over the microbatches, but the largest score is the largest of any.
        stats = {k: jnp.max(v) if k == 'attn_logit_max' else jnp.mean(v) for k, v in stats_M.items()}
        grads = jax.tree.map(lambda g: g / spec.microbatches, grads)
        if spec.noise_scale:  # the step's mean gradient, before clipping
            stats['gns_big_sq'] = optax.tree.norm(grads, squared=True)

    loss = stats.pop('loss')
    updates, opt_state = spec.tx.update(grads, state['opt_state'], params)
    new_params = optax.apply_updates(params, updates)
    new_state = {'step': state['step'] + 1, 'params': new_params, 'model_state': model_state, 'opt_state': opt_state}
    norms = diagnostics.norms(params, grads, updates, spec.norm_groups, spec.norms)
    grad_norm = norms.pop('grad_norm') if 'grad_norm' in norms else optax.tree.norm(grads)
    # One flag a step, so no checkpoint is ever saved from a non-finite state (the loop reads it).
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(new_params))
    metrics = {'loss': loss, 'grad_norm': grad_norm, 'lr': spec.lr(state['step']), 'finite': finite,
               **norms, **stats}
    return new_state, metrics


def eval_step(spec: StepSpec, params, model_state, batch: dict) -> dict:
    """Summed loss, counts and task metrics, so any number of batches averages correctly."""
    outputs, _, _ = _forward(spec, params, model_state, batch, train=False, rngs=None)
    return tasks.eval_sums(spec.task, outputs, batch)


def compile_steps(spec: StepSpec, mesh: jax.sharding.Mesh, shardings: TrainState, abstract_state: TrainState,
                  train_batch: dict, eval_batch: dict | None = None) -> tuple[Callable, Callable]:
    """AOT-compiled (train_step, eval_step) with explicit in/out shardings, for
    batches shaped like `train_batch` and `eval_batch` (ShapeDtypeStructs).

    The train state is donated: its buffers are reused for the new state.
    """
    def batch_shardings(batch):
        return {k: parallel.batch_sharding(mesh, v.ndim) for k, v in batch.items()}

    eval_batch = train_batch if eval_batch is None else eval_batch
    replicated = NamedSharding(mesh, P())
    with jax.set_mesh(mesh):  # logical activation constraints resolve against this mesh
        train = jax.jit(
            train_step, static_argnums=0, donate_argnums=1,
            in_shardings=(shardings, batch_shardings(train_batch)), out_shardings=(shardings, replicated),
        ).lower(spec, abstract_state, train_batch).compile()
        evaluate = jax.jit(
            eval_step, static_argnums=0,
            in_shardings=(shardings['params'], shardings['model_state'], batch_shardings(eval_batch)),
            out_shardings=replicated,
        ).lower(spec, abstract_state['params'], abstract_state['model_state'], eval_batch).compile()
    return train, evaluate
