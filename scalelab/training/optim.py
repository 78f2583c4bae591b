"""Optimizer and learning-rate schedule from config, built from optax parts.

Muon (optax.contrib.muon) orthogonalises the momentum of the hidden matrices the model
family names (Family.hidden_matrices: attention and MLP kernels, each as (input axes,
output axes), layers stacked by scan a batch axis); embeddings, the head, norms and
biases take AdamW. Its updates carry optax's spectral width scaling,
sqrt(max(1, fan_out / fan_in)), which keeps their spectral norm independent of width:
muP's 1 / width multiplier on hidden learning rates is Adam's rule and does not apply,
so under muP Muon keeps one learning rate (only the model's own multipliers change).

Schedule-free AdamW (Defazio et al. 2024; optax.contrib.schedule_free over AdamW without
momentum, as optax.contrib.schedule_free_adamw builds it, with the decay mask) trains at a
constant rate after warmup and evaluates an average of its iterates: eval_params gives the
parameters a run evaluates, scores and deploys.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from scalelab.core import naming

OPTIMIZERS = ('sgd', 'momentum', 'adagrad', 'rmsprop', 'adam', 'adamw', 'lion', 'adafactor', 'muon',
              'schedule_free_adamw')
SCHEDULES = ('constant', 'cosine', 'wsd')
# The keys of an optimizer's own rule each one reads (all read the learning rate, its schedule,
# weight_decay and grad_clip): one set away from its default for an optimizer that does not
# read it is refused, as a setting that would silently do nothing.
READS = {'sgd': (), 'momentum': ('momentum',), 'adagrad': ('eps',), 'rmsprop': ('b2', 'eps'),
         'adam': ('b1', 'b2', 'eps'), 'adamw': ('b1', 'b2', 'eps'), 'lion': ('b1', 'b2'), 'adafactor': (),
         'muon': ('momentum', 'b1', 'b2', 'eps'), 'schedule_free_adamw': ('b1', 'b2', 'eps')}
DECOUPLED = ('adamw', 'lion', 'muon', 'schedule_free_adamw')  # weight decay times the learning rate; the others add it to the gradient


def default_config() -> ConfigDict:
    return ConfigDict(dict(
        name='adamw',
        learning_rate=1e-3,   # peak
        schedule='cosine',    # constant | cosine | wsd (warmup-stable-decay)
        warmup_steps=100,
        warmup_fraction=0.0,  # > 0: warmup_steps = round(this x train.steps), resolved with the duration
        decay_fraction=0.2,   # wsd: share of the run spent decaying
        decay_steps=0,        # wsd: > 0 decays over exactly this many steps instead (a decay branch sets it)
        min_lr_ratio=0.1,     # final learning rate / peak (cosine, wsd)
        b1=0.9,               # adam, adamw, lion; muon's AdamW side
        b2=0.95,              # adam, adamw, rmsprop (its decay), lion; muon's AdamW side
        eps=1e-8,
        momentum=0.9,         # sgd with momentum ('momentum'); muon's momentum on its matrices
        weight_decay=0.1,     # adamw, lion, muon: decoupled, times the learning rate; others: added to the gradient (L2)
        independent_wd=False,  # True: decay by weight_decay * schedule / peak, apart from the learning rate
        grad_clip=1.0,        # global-norm clipping; 0: off
    ))


def validate(cfg: ConfigDict) -> list[str]:
    problems = []
    if cfg.name not in OPTIMIZERS:
        problems.append(f'optim.name={cfg.name!r}: not one of {", ".join(OPTIMIZERS)}')
    if cfg.schedule not in SCHEDULES:
        problems.append(f'optim.schedule={cfg.schedule!r}: not one of {", ".join(SCHEDULES)}')
    if math.isfinite(cfg.learning_rate) and not cfg.learning_rate > 0:  # nan and inf: config.validate
        problems.append(f'optim.learning_rate={cfg.learning_rate}: must be positive')
    for key in ('warmup_steps', 'decay_steps', 'weight_decay', 'grad_clip'):
        if cfg[key] < 0:
            problems.append(f'optim.{key}={cfg[key]}: must be non-negative')
    if not 0.0 <= cfg.warmup_fraction < 1.0:
        problems.append(f'optim.warmup_fraction={cfg.warmup_fraction}: must be in [0, 1) (0: use optim.warmup_steps)')
    for key in ('decay_fraction', 'min_lr_ratio'):
        if not 0.0 <= cfg[key] <= 1.0:
            problems.append(f'optim.{key}={cfg[key]}: must be in [0, 1]')
    for key in ('b1', 'b2', 'momentum'):
        if not 0.0 <= cfg[key] < 1.0:
            problems.append(f'optim.{key}={cfg[key]}: must be in [0, 1)')
    if not cfg.eps > 0:
        problems.append(f'optim.eps={cfg.eps}: must be positive')
    if cfg.name == 'schedule_free_adamw' and cfg.schedule != 'constant':
        problems.append(f'optim.schedule={cfg.schedule!r}: schedule_free_adamw replaces the decay by averaging; '
                        "use 'constant' (its warmup is optim.warmup_steps)")
    if cfg.name in READS:
        defaults = default_config()
        for key in ('b1', 'b2', 'eps', 'momentum'):
            if key not in READS[cfg.name] and cfg[key] != defaults[key]:
                reads = ', '.join(READS[cfg.name]) or 'none of b1, b2, eps, momentum'
                problems.append(f'optim.{key}={cfg[key]}: {cfg.name} does not use it (it reads {reads}); '
                                f'leave it at its default, {defaults[key]}')
    return problems


def schedule(cfg: ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0, then constant, cosine, or stable-then-linear decay."""
    peak, warmup = cfg.learning_rate, min(cfg.warmup_steps, total_steps)
    final = peak * cfg.min_lr_ratio
    if cfg.schedule == 'constant':
        main = optax.constant_schedule(peak)
    elif cfg.schedule == 'cosine':
        main = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1), alpha=cfg.min_lr_ratio)
    elif cfg.schedule == 'wsd':
        decay = cfg.decay_steps if cfg.decay_steps > 0 else max(int(round(cfg.decay_fraction * total_steps)), 0)
        stable = max(total_steps - warmup - decay, 0)
        main = optax.join_schedules(
            [optax.constant_schedule(peak), optax.linear_schedule(peak, final, max(decay, 1))], [stable])
    else:
        raise ValueError(f'optim.schedule={cfg.schedule!r}: not one of {", ".join(SCHEDULES)}')
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


NO_DECAY = re.compile(r'(^|\.)(scale|bias)$')


def decay_mask(params):
    """Weight decay skips norms' scales and biases (by name: with stacked layers
    they are matrices too)."""
    return jax.tree.map(lambda name: not NO_DECAY.search(name), naming.names(params))


class _Count(NamedTuple):
    count: jax.Array


def independent_decay(weight_decay: float, relative: optax.Schedule) -> optax.GradientTransformation:
    """p <- p - weight_decay * relative(step) * p, on top of the optimizer's update: weight
    decay independent of the learning rate (Loshchilov & Hutter's original form; Wortsman
    et al. 2023), so changing the learning rate leaves the decay per step as it was."""
    def init(params):
        return _Count(jnp.zeros([], jnp.int32))

    def update(updates, state, params):
        factor = weight_decay * relative(state.count)
        updates = jax.tree.map(lambda u, p: u - factor * p, updates, params)
        return updates, _Count(optax.safe_increment(state.count))
    return optax.masked(optax.GradientTransformation(init, update), decay_mask)


def _optimizer(cfg: ConfigDict, lr: optax.Schedule, schedule_fn: optax.Schedule,
               lr_scale: float = 1.0, matrices: Callable | None = None) -> optax.GradientTransformation:
    """One optimizer at `lr` (a parameter group's: lr_scale times the schedule, muP).
    Decay coupled to the learning rate is scaled by 1 / lr_scale, as MuAdam does, so
    each group decays lr * weight_decay per step whatever its multiplier; independent
    decay follows the schedule's shape (schedule / peak) and needs no such correction."""
    decay = 0.0 if cfg.independent_wd else cfg.weight_decay / lr_scale
    adamw = lambda: optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=decay, mask=decay_mask)
    if cfg.name == 'adamw':
        base = adamw()
    elif cfg.name == 'lion':
        base = optax.lion(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=decay, mask=decay_mask)
    elif cfg.name == 'muon':
        base = _muon(cfg, lr, decay, matrices, adamw())
    elif cfg.name == 'schedule_free_adamw':
        base = optax.contrib.schedule_free(optax.chain(
            optax.scale_by_rms(decay=cfg.b2, eps=cfg.eps, eps_in_sqrt=False, bias_correction=True),
            optax.add_decayed_weights(decay, mask=decay_mask), optax.scale_by_learning_rate(lr)),
            learning_rate=lr, b1=cfg.b1)
    else:
        base = {
            'sgd': lambda: optax.sgd(lr),
            'momentum': lambda: optax.sgd(lr, momentum=cfg.momentum),
            'adagrad': lambda: optax.adagrad(lr, eps=cfg.eps),
            'rmsprop': lambda: optax.rmsprop(lr, decay=cfg.b2, eps=cfg.eps),
            'adam': lambda: optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
            'adafactor': lambda: optax.adafactor(lr),  # optax's defaults: factored beyond 128, relative step
        }[cfg.name]()
        if decay > 0:
            base = optax.chain(optax.add_decayed_weights(decay, mask=decay_mask), base)
    if cfg.independent_wd and cfg.weight_decay > 0:
        base = optax.chain(base, independent_decay(cfg.weight_decay,
                                                   lambda step: schedule_fn(step) / cfg.learning_rate))
    return base


def _muon(cfg: ConfigDict, lr: optax.Schedule, decay: float, matrices: Callable | None,
          adamw: optax.GradientTransformation) -> optax.GradientTransformation:
    """optax.contrib.muon on the parameters `matrices(name, ndim)` gives axes for, `adamw` on the rest."""
    if matrices is None:
        raise ValueError("optim.name='muon': the model names no hidden matrices (Family.hidden_matrices)")

    def axes(name, ndim):
        found = matrices(name, ndim)
        return None if found is None else optax.contrib.MuonDimensionNumbers(*found)

    def dimension_numbers(params):  # the muon part's leaves (the others are masked out)
        return jax.tree.map(lambda name, p: axes(name, p.ndim), naming.names(params), params)

    def labels(params):
        return jax.tree.map(lambda name, p: 'adamw' if axes(name, p.ndim) is None else 'muon',
                            naming.names(params), params)
    hidden = optax.contrib.muon(lr, beta=cfg.momentum, eps=cfg.eps, weight_decay=decay,
                                muon_weight_dimension_numbers=dimension_numbers)
    return optax.partition({'muon': hidden, 'adamw': adamw}, labels)


def make(cfg: ConfigDict, total_steps: int, *, groups: tuple[dict, Callable] | None = None,
         freeze: str = '', matrices: Callable | None = None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer and its learning-rate schedule.

    groups = ({group: learning-rate multiplier}, name -> group) gives parameter
    groups their own rates (muP; Muon keeps one rate, see above). Parameters whose
    names (core.naming.name, e.g. 'blocks.0.attn.q.kernel') match the regex `freeze`
    are not updated; their gradients are zeroed before global-norm clipping.
    matrices(name, ndim) -> (input axes, output axes) or None: Muon's hidden matrices.
    """
    lr = schedule(cfg, total_steps)
    clip = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    if cfg.name == 'muon':
        groups = None
    if groups is None and not freeze:
        return optax.chain(*clip, _optimizer(cfg, lr, lr, matrices=matrices)), lr
    scales, group_of = groups or ({'all': 1.0}, lambda _: 'all')
    pattern = re.compile(freeze) if freeze else None

    def labels(params):
        return jax.tree.map(lambda n: 'frozen' if pattern and pattern.search(n) else group_of(n), naming.names(params))

    zero_frozen = optax.multi_transform({'frozen': optax.set_to_zero(),
                                         **{g: optax.identity() for g in scales}}, labels)
    per_group = optax.multi_transform(
        {'frozen': optax.set_to_zero(),
         **{g: _optimizer(cfg, lambda step, s=s: lr(step) * s, lr, s, matrices) for g, s in scales.items()}}, labels)
    return optax.chain(zero_frozen, *clip, per_group), lr


def _schedule_free(node) -> bool:
    return isinstance(node, optax.contrib.ScheduleFreeState)


def eval_params(opt_state, params):
    """What a run evaluates, scores and deploys: schedule-free's average of its iterates
    (optax.contrib.schedule_free_eval_params) under schedule_free_adamw; the trained
    parameters themselves under every other optimizer."""
    found = [node for node in jax.tree.leaves(opt_state, is_leaf=_schedule_free) if _schedule_free(node)]
    if len(found) > 1:  # config.validate refuses groups and freezing with it
        raise ValueError('schedule_free_adamw with parameter groups: each group averages apart; not supported')
    return optax.contrib.schedule_free_eval_params(found[0], params) if found else params
