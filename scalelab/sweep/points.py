"""Expand a sweep declaration into points, each an ordinary run: a base
experiment file plus `--config.key=value` overrides.

Axes are config keys with lists of values (`'optim.learning_rate': (1e-3, 3e-3)`)
or one of two special axes: `target_params` (the model shape is solved to hit
each count, see shapes.py) and `tokens_per_param` (train.tokens = value x N).
Points are the product of all axes.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import re
import shlex
import sys
from pathlib import Path

from ml_collections import ConfigDict

from scalelab import models
from scalelab.core.errors import ConfigError
from scalelab.science import shapes
from scalelab import data as data_lib
from scalelab.training import plan as plan_lib

SPECIAL_AXES = ('target_params', 'tokens_per_param')
LAWS = ('power', 'chinchilla', 'isoflop', 'compute_optimal', 'lr_transfer', 'lr_sensitivity', 'hparams')
LR_LAW_AXES = ('model.d_model', 'optim.learning_rate')  # the columns lr_transfer and lr_sensitivity read


def default_config() -> ConfigDict:
    cfg = ConfigDict()
    cfg.base = 'experiments/lm_stdlib.py'   # run config file[:arg], relative to the working directory
    cfg.overrides = ConfigDict({}, allow_dotted_keys=True)  # 'a.b': value, applied to every point
    cfg.axes = ConfigDict({}, allow_dotted_keys=True)       # 'a.b' or special axis: (values, ...)
    cfg.shape = shapes.default_rule()
    # Points of the product left out before anything runs (0 = no limit): an IsoFLOP grid keeps,
    # at each budget, the sizes whose planned tokens per parameter (D / fit.count's N) lie in a window.
    cfg.keep = ConfigDict(dict(
        min_tokens_per_param=0.0,
        max_tokens_per_param=0.0,
        min_steps=0,
    ))
    cfg.fit = ConfigDict(dict(
        law='power',          # power: L(N); chinchilla: L(N, D) (Approach 3); isoflop: Approach 2;
                              # compute_optimal: Approaches 1, 2 and 3 side by side, with a prediction
        metric='eval_loss',   # summary.json field fitted as the loss
        also=(),              # more summary.json fields: results.csv columns, plotted against N in metrics.png
        count='with_head',    # results.csv's N: with_head (flops.FLOP_CONVENTION), non_embedding or total
        bootstrap=200,        # resamples for confidence bands and standard errors
        budget_tol=0.1,       # isoflop: runs within this many decades of C share a budget
        min_points=5,         # isoflop: runs a budget needs for its parabola
    ))
    return cfg


def from_dict(saved: dict) -> ConfigDict:
    """A sweep config from the sweep.json a sweep writes (dotted keys in overrides and axes)."""
    cfg = default_config()
    for key, value in saved.items():
        if key in ('overrides', 'axes'):
            cfg[key] = ConfigDict(value, allow_dotted_keys=True)
        elif isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


@dataclasses.dataclass(frozen=True)
class Point:
    name: str
    axes: dict              # this point's axis values
    overrides: dict         # 'a.b' -> value: everything that differs from the base file
    plan: plan_lib.Plan     # the run it is: config resolved once, counts and FLOPs derived

    @property
    def config(self) -> ConfigDict:
        """The resolved run config."""
        return self.plan.cfg


def load_experiment(spec: str) -> ConfigDict:
    """`path.py[:arg]` -> its get_config(arg), as `--config` would load it."""
    path, _, arg = spec.partition(':')
    if not Path(path).is_file():
        raise ConfigError([f'base={spec!r}: no such config file {path!r} (relative to {Path.cwd()})'])
    spec_ = importlib.util.spec_from_file_location(f'_scalelab_experiment_{Path(path).stem}', path)
    module = importlib.util.module_from_spec(spec_)
    sys.path.insert(0, str(Path.cwd()))
    try:
        spec_.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module.get_config(arg) if arg else module.get_config()


def set_key(cfg: ConfigDict, dotted: str, value) -> None:
    """cfg.a.b = value, with an error naming the key when it does not exist."""
    *sections, key = dotted.split('.')
    node = cfg
    for section in sections:
        if section not in node or not isinstance(node[section], ConfigDict):
            raise ConfigError([f'{dotted}: no section {section!r} in the run config'])
        node = node[section]
    if key not in node:
        raise ConfigError([f'{dotted}: unknown key; valid keys under {".".join(sections) or "the top level"}: '
                           f'{", ".join(sorted(node.keys()))}'])
    node[key] = float(value) if isinstance(node[key], float) and isinstance(value, int) else value


def expand(sweep: ConfigDict, num_devices: int, left_out: list | None = None) -> list[Point]:
    """Every point of the sweep that `sweep.keep` keeps, validated as a run (ConfigError before
    anything runs); `left_out` (if given) receives (name, reason) for each point it drops."""
    problems = [f'axes.{k}: needs a non-empty list of values' for k, v in sweep.axes.items()
                if not isinstance(v, (list, tuple)) or not v]
    if sweep.fit.law not in LAWS:
        problems.append(f'fit.law={sweep.fit.law!r}: not one of {", ".join(LAWS)}')
    if sweep.fit.law in ('lr_transfer', 'lr_sensitivity'):
        problems += [f'fit.law={sweep.fit.law!r} needs {key!r} as an axis (a column of results.csv); the sweep sets it '
                     f'{"in overrides" if key in sweep.overrides else "nowhere"}'
                     for key in LR_LAW_AXES if key not in sweep.axes]
    if problems:
        raise ConfigError(problems)
    base = load_experiment(sweep.base)
    for key, value in sweep.overrides.items():
        set_key(base, key, value)
    names = list(sweep.axes.keys())
    points = []
    for index, values in enumerate(itertools.product(*(sweep.axes[k] for k in names))):
        axes = dict(zip(names, values))
        cfg = ConfigDict(base.to_dict())
        overrides = dict(sweep.overrides.items())
        for key, value in axes.items():
            if key not in SPECIAL_AXES:
                set_key(cfg, key, value)
                overrides[key] = value
        spec = data_lib.spec(cfg.data)  # once per point: the plan takes it
        if 'target_params' in axes:
            if cfg.model.name != 'transformer':
                raise ConfigError([f'axes.target_params: shapes are solved for transformers, '
                                   f'not model.name={cfg.model.name!r}'])
            model = ConfigDict(cfg.model.to_dict())
            models.resolve(model, spec)
            try:
                solved = shapes.solve_transformer(axes['target_params'], model, sweep.shape)
            except ValueError as e:
                raise ConfigError([f'axes.target_params: {e}']) from None
            for key in ('d_model', 'n_layers', 'n_heads', 'n_kv_heads', 'd_ff'):
                cfg.model[key] = solved[key]
                overrides[f'model.{key}'] = solved[key]
        if 'tokens_per_param' in axes:
            n = count(plan_lib.make(cfg, num_devices, spec), sweep.shape.count)
            cfg.train.tokens = float(round(axes['tokens_per_param'] * n))
            overrides['train.tokens'] = cfg.train.tokens
        name = f'p{index:02d}' + ''.join(f'-{_label(k)}{_short(v)}' for k, v in axes.items())
        point = Point(name, axes, overrides, plan_lib.make(cfg, num_devices, spec))
        reason = outside_keep(sweep, point)
        if reason is None:
            points.append(point)
        elif left_out is not None:
            left_out.append((name, reason))
    return points


def outside_keep(sweep: ConfigDict, point: Point) -> str | None:
    """Why `sweep.keep` leaves this point out, or None when it stays."""
    keep, plan = sweep.keep, point.plan
    ratio = plan.steps * plan.tokens_per_step / count(plan, sweep.fit.count)
    if keep.min_tokens_per_param and ratio < keep.min_tokens_per_param:
        return f'{ratio:.3g} tokens per parameter < keep.min_tokens_per_param={keep.min_tokens_per_param:g}'
    if keep.max_tokens_per_param and ratio > keep.max_tokens_per_param:
        return f'{ratio:.3g} tokens per parameter > keep.max_tokens_per_param={keep.max_tokens_per_param:g}'
    if keep.min_steps and plan.steps < keep.min_steps:
        return f'{plan.steps} steps < keep.min_steps={keep.min_steps}'
    return None


def count(plan: plan_lib.Plan, which: str) -> int:
    """A parameter count of the plan's model: non_embedding, total or with_head (flops.scaling_params)."""
    return plan.param_counts[which]


def planned_flops(point: Point) -> float:
    """The point's compute C = 6 N D (flops.FLOP_CONVENTION)."""
    return point.plan.scaling_flops


def run_command(sweep: ConfigDict, point: Point, workdir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The `python -m scalelab.run ...` argv that trains this point."""
    return command(sweep.base, point.overrides, workdir, extra)


def command(base: str, overrides: dict, workdir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The `python -m scalelab.run ...` argv of the base config file with `overrides`."""
    args = [sys.executable, '-m', 'scalelab.run', '--config', base, f'--workdir={workdir}']
    args += [f'--config.{key}={_flag_value(value)}' for key, value in overrides.items()]
    return args + list(extra)


def shell(argv: list[str]) -> str:
    return ' '.join(shlex.quote(a) for a in ['python', *argv[1:]])


def _flag_value(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _label(key: str) -> str:
    return {'target_params': 'N', 'tokens_per_param': 'tpp'}.get(key, key.split('.')[-1])


def _short(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= 1000:
        for unit, scale in (('P', 1e15), ('T', 1e12), ('G', 1e9), ('M', 1e6), ('k', 1e3)):
            if abs(value) >= scale:
                return f'{value / scale:.3g}{unit}'
    return re.sub(r'[^A-Za-z0-9._]', '_', str(value))
