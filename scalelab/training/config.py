"""Run configuration: defaults, validation with clear errors, derived values.

`validate` collects every problem it can see (unknown keys, wrong types,
impossible values, meshes or batches that do not fit the devices) and
raises one ConfigError naming each key, its value and what would be valid,
before anything is compiled.
"""
from __future__ import annotations

import difflib
import math
import os
import re

from ml_collections import ConfigDict

from scalelab import models
from scalelab.core import parallel, tasks
from scalelab.core.errors import ConfigError
from scalelab.science import flops
from scalelab.training import diagnostics, downstream_eval, optim, writers
from scalelab import data as data_lib

COMPUTE_DTYPES = ('float32', 'bfloat16')
# Keys that no longer exist, and what took their place.
REMOVED = {
    'train.eval_batches': 'the evaluation set is fixed per dataset now: set data.eval_tokens (text, corpus) '
                          'or data.eval_examples (images, teacher)',
}


def base_config(model: str = 'transformer', data: str | None = None) -> ConfigDict:
    """Every key a run reads, with its default; experiments override these.
    The model and data sections hold the keys of the chosen family and source."""
    family = models.family(model)
    cfg = ConfigDict()
    cfg.seed = 0
    cfg.model = family.default_config()
    cfg.data = data_lib.default_config(data or family.DEFAULT_DATA)
    cfg.train = ConfigDict(dict(
        global_batch=16,
        steps=1000,           # used unless tokens or flops is positive
        tokens=0.0,           # training duration in tokens, or examples for non-sequence data (overrides steps)
        flops=0.0,            # training duration as compute C = 6 N D (flops.FLOP_CONVENTION; overrides steps)
        microbatches=1,       # gradient accumulation: global_batch is split into this many
        compute_dtype='float32',
        log_every=10,
        eval_every=200,       # 0: evaluate only at the end (the evaluation set's size is a data key)
        evals=0,              # > 0: this many evaluations spread evenly, the last at the end (sets eval_every)
        init_from='',         # fine-tune: a run workdir, a checkpoint directory or a .safetensors file
        decay_from='',        # a decay branch: the workdir of a constant-rate run (the trunk) to branch from
        decay_start=0,        # ... at this step, one of the trunk's checkpoints (branches.py)
        freeze='',            # regex of parameter names (as in export.py) kept fixed, e.g. '^embed\\.'
        z_loss=0.0,           # weight of mean log(Z)^2 added to the loss (tasks.z_loss; PaLM used 1e-4)
        label_smoothing=0.0,  # in [0, 1): the labels' share spread uniformly over the outputs (Vaswani et al.: 0.1)
    ))
    cfg.optim = optim.default_config()
    cfg.log = ConfigDict(dict(  # what each log step records, and where (metrics.jsonl always)
        tensorboard=True,     # event files under <workdir>/tb
        wandb='',             # a W&B project: log there too (pip install wandb)
        wandb_mode='auto',    # auto (online if api.wandb.ai answers, else offline) | online | offline
        norms='groups',       # none | global | groups: norms of params, grads, updates (diagnostics.py)
        spike_window=100,     # steps of loss history a step's loss z-score is measured against
        spike_z=6.0,          # a loss this many standard deviations above that history is a spike
        logit_stats=True,     # output-logit RMS and the largest attention score (attn_logit_max)
        noise_scale=False,    # the gradient noise scale B_simple (needs train.microbatches >= 2; noise_scale.py)
    ))
    cfg.eval = downstream_eval.default_config()
    cfg.checkpoint = ConfigDict(dict(
        every_steps=200,
        keep=3,
        async_save=True,
    ))
    cfg.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    return cfg


def resolve(cfg: ConfigDict, num_devices: int | None) -> ConfigDict:
    """Validated copy with defaults filled in and derived values computed (see resolve_with_spec)."""
    return resolve_with_spec(cfg, num_devices)[0]


def resolve_with_spec(cfg: ConfigDict, num_devices: int | None, spec=None,
                      platform: str | None = None) -> tuple[ConfigDict, tasks.DataSpec]:
    """One pass down the floors: the keys checked against one base config, merged into it, the
    data's spec computed once (or `spec`, computed by the caller from this data section), the
    model family resolved on it, every value then validated (all problems listed at once, the
    device checks included: the mesh against num_devices, kernels against the platform, where
    given), and the durations derived.

    Derived: mesh sizes (-1 filled), model sizes given as 0 (model.vocab_size: the
    tokenizer's vocabulary), train.steps when the duration is given in tokens or
    FLOPs, optim.warmup_steps when optim.warmup_fraction is set, and train.eval_every
    when train.evals is.
    """
    name = cfg.get('model', {}).get('name', 'transformer')
    if name not in models.FAMILIES:
        raise ConfigError([f'model.name={name!r}: unknown model family; valid: {sorted(models.FAMILIES)}'])
    data_name = cfg.get('data', {}).get('name', models.family(name).DEFAULT_DATA)
    if data_name not in data_lib.SOURCES:
        raise ConfigError([f'data.name={data_name!r}: not one of {", ".join(map(repr, data_lib.SOURCES))}'])
    out = base_config(name, data_name)
    problems = _schema_problems(cfg, out, '')
    if problems:  # value checks need the right keys and types
        raise ConfigError(problems)
    _merge_into(out, cfg)
    problems = _non_finite(out)
    if problems:  # the checks below compare and divide these values
        raise ConfigError(problems)
    problems = _value_problems(out)
    if not problems:  # the family and task checks read resolved values
        spec = spec or data_lib.spec(out.data)
        models.resolve(out.model, spec)
        problems += _model_problems(out, spec)
    sizes = None
    if num_devices is not None:
        try:
            sizes = parallel.mesh_shape(out.mesh, num_devices)
        except ValueError as e:
            problems.append(str(e))
        else:
            problems += _batch_problems(out.train, sizes)
    if platform is not None and out.model.get('attention') == 'cudnn' and platform != 'gpu':
        problems.append(f"model.attention='cudnn': needs a GPU, these devices are {platform}; "
                        "use 'auto', 'xla' or 'einsum'")
    if problems:
        raise ConfigError(problems)
    if sizes:
        out.mesh.update(sizes)
    tokens_per_step = out.train.global_batch * flops.tokens_per_example(spec)
    if out.train.flops > 0:  # a compute budget, in the scaling-law convention (flops.FLOP_CONVENTION)
        per_step = flops.scaling_flops_per_step(out.model, spec, out.train.global_batch)
        out.train.steps = max(1, math.ceil(out.train.flops / per_step))
    elif out.train.tokens > 0:
        out.train.steps = max(1, math.ceil(out.train.tokens / tokens_per_step))
    if out.train.decay_from and out.train.steps == 0:  # a branch's end from its start: one sweep axis
        start, decay = out.train.decay_start, out.optim.decay_steps
        out.train.steps = start + decay if decay > 0 else round(start / (1 - out.optim.decay_fraction))
    if out.optim.warmup_fraction > 0:  # a warmup that scales with a duration given in tokens or FLOPs
        out.optim.warmup_steps = round(out.optim.warmup_fraction * out.train.steps)
    if out.train.decay_from:  # a branch decays from its start to its end (branches.py)
        if out.train.decay_start >= out.train.steps:
            raise ConfigError([f'train.decay_start={out.train.decay_start}: at or past the branch\'s end, '
                               f'train.steps={out.train.steps}; a branch decays from decay_start to train.steps'])
        out.optim.decay_steps = out.train.steps - out.train.decay_start
    if out.train.evals > 0:  # curves evaluated at the same fractions of every run, whatever its length
        out.train.eval_every = max(1, math.ceil(out.train.steps / out.train.evals))
    out.lock()
    return out, spec


def _schema_problems(cfg: ConfigDict, reference: ConfigDict, prefix: str) -> list[str]:
    problems = []
    for key, value in cfg.items():
        path = prefix + key
        if path in REMOVED:
            problems.append(f'{path}: no longer a key; {REMOVED[path]}')
            continue
        if key not in reference:
            close = difflib.get_close_matches(key, list(reference.keys()), n=1)
            hint = f'; did you mean {prefix}{close[0]}?' if close else ''
            problems.append(f'{path}: unknown key{hint} (valid keys under '
                            f'{prefix.rstrip(".") or "the top level"}: {", ".join(sorted(reference.keys()))})')
            continue
        expected = reference[key]
        if isinstance(expected, ConfigDict):
            if not isinstance(value, (ConfigDict, dict)):
                problems.append(f'{path}={value!r}: expected a section of keys, got {type(value).__name__}')
            else:
                problems += _schema_problems(ConfigDict(value) if isinstance(value, dict) else value,
                                             expected, path + '.')
        elif not _type_ok(value, expected):
            problems.append(f'{path}={value!r}: expected {type(expected).__name__}, got {type(value).__name__}')
    return problems


def _type_ok(value, expected) -> bool:
    if isinstance(expected, bool):
        return isinstance(value, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(expected, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(expected))


def _merge_into(dst: ConfigDict, src: ConfigDict) -> None:
    for key, value in src.items():
        if isinstance(value, (ConfigDict, dict)):
            _merge_into(dst[key], value)
        else:
            expected = dst[key]
            dst[key] = float(value) if isinstance(expected, float) else value


def _choice(problems: list[str], path: str, value, valid) -> None:
    if value not in valid:
        problems.append(f'{path}={value!r}: not one of {", ".join(map(repr, valid))}')


def _positive(problems: list[str], path: str, value, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        problems.append(f'{path}={value}: must be {"non-negative" if allow_zero else "positive"}')


def _non_finite(cfg: ConfigDict, prefix: str = '') -> list[str]:
    """Every float key holding nan or inf (they pass the comparisons of the value checks)."""
    problems = []
    for key, value in cfg.items():
        if isinstance(value, ConfigDict):
            problems += _non_finite(value, f'{prefix}{key}.')
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f'{prefix}{key}={value}: must be a finite number')
    return problems


def _value_problems(cfg: ConfigDict) -> list[str]:
    """Every value a merged config can be checked for before the data and model are resolved."""
    problems = []
    family = models.family(cfg.model.name)
    for key in family.POSITIVE:
        _positive(problems, f'model.{key}', cfg.model[key])
    for key, valid in family.CHOICES.items():
        _choice(problems, f'model.{key}', cfg.model[key], valid)

    t = cfg.train
    for key in ('global_batch', 'microbatches', 'log_every'):
        _positive(problems, f'train.{key}', t[key])
    for key in ('tokens', 'flops', 'eval_every', 'evals', 'z_loss'):
        _positive(problems, f'train.{key}', t[key], allow_zero=True)
    if t.tokens > 0 and t.flops > 0:
        problems.append(f'train.tokens={t.tokens} and train.flops={t.flops}: give the duration one way only')
    if t.tokens <= 0 and t.flops <= 0 and not (t.decay_from and t.steps == 0):  # a branch may derive its end
        _positive(problems, 'train.steps', t.steps)
    _choice(problems, 'train.compute_dtype', t.compute_dtype, COMPUTE_DTYPES)
    if not 0.0 <= t.label_smoothing < 1.0:
        problems.append(f'train.label_smoothing={t.label_smoothing}: must be in [0, 1)')
    if t.decay_from and cfg.optim.schedule != 'wsd':
        problems.append(f"train.decay_from={t.decay_from!r}: a branch decays; set optim.schedule='wsd' "
                        f'(got {cfg.optim.schedule!r})')
    if t.decay_from and t.steps == 0 and cfg.optim.decay_steps == 0 and not 0 < cfg.optim.decay_fraction < 1:
        problems.append(f'optim.decay_fraction={cfg.optim.decay_fraction}: a branch with train.steps=0 ends at '
                        'train.decay_start / (1 - optim.decay_fraction), which needs it in (0, 1); '
                        'or give optim.decay_steps or train.steps')
    if t.decay_from and t.init_from:
        problems.append('train.decay_from and train.init_from: a branch continues its trunk\'s state; give one')
    if t.init_from and not os.path.exists(t.init_from):
        problems.append(f'train.init_from={t.init_from!r}: no such run, checkpoint or file')
    try:
        re.compile(t.freeze)
    except re.error as e:
        problems.append(f'train.freeze={t.freeze!r}: not a regular expression ({e})')
    _choice(problems, 'log.norms', cfg.log.norms, diagnostics.MODES)
    _choice(problems, 'log.wandb_mode', cfg.log.wandb_mode, writers.WANDB_MODES)
    if cfg.log.noise_scale and t.microbatches < 2:
        problems.append(f'log.noise_scale=True: needs train.microbatches >= 2 (got {t.microbatches}): it compares '
                        "each microbatch's gradient with their mean; set e.g. train.microbatches=4")
    _positive(problems, 'log.spike_window', cfg.log.spike_window)
    _positive(problems, 'log.spike_z', cfg.log.spike_z)
    _positive(problems, 'checkpoint.every_steps', cfg.checkpoint.every_steps)
    _positive(problems, 'checkpoint.keep', cfg.checkpoint.keep)
    problems += optim.validate(cfg.optim)
    problems += data_lib.validate(cfg.data)
    return problems


def _model_problems(cfg: ConfigDict, spec) -> list[str]:
    """The family's checks of its resolved section, and whether it can learn the data's task."""
    family = models.family(cfg.model.name)
    if spec.task not in family.TASKS:
        return [f'model.name={cfg.model.name!r} cannot learn data.name={cfg.data.name!r} '
                f'(task {spec.task}); it handles {", ".join(family.TASKS)}']
    problems = family.validate(cfg.model, spec) + downstream_eval.validate(cfg.eval, spec.task)
    if cfg.optim.name == 'schedule_free_adamw' and (family.lr_groups(cfg.model) is not None or cfg.train.freeze):
        what = (f'train.freeze={cfg.train.freeze!r}' if cfg.train.freeze
                else f'model.parametrization={cfg.model.parametrization!r} (its learning-rate groups)')
        problems.append(f"optim.name='schedule_free_adamw' with {what}: each parameter group would average "
                        'apart, which scalelab does not support; use adamw')
    if cfg.optim.name == 'muon' and family.hidden_matrices(cfg.model) is None:
        named = sorted(n for n, f in models.FAMILIES.items() if f.hidden_matrices(f.default_config()) is not None)
        problems.append(f"optim.name='muon': model.name={cfg.model.name!r} names no hidden matrices for Muon "
                        f'to orthogonalise; families that do: {", ".join(named)}')
    for key in ('label_smoothing', 'z_loss'):  # both act on a softmax's logits
        if cfg.train[key] > 0 and spec.task not in tasks.LOGIT_TASKS:
            problems.append(f'train.{key}={cfg.train[key]}: needs logits (tasks {", ".join(tasks.LOGIT_TASKS)}); '
                            f'data.name={cfg.data.name!r} is {spec.task}')
    return problems


def _batch_problems(t: ConfigDict, sizes: dict) -> list[str]:
    shards = sizes['data'] * sizes['fsdp']
    if t.global_batch % (shards * t.microbatches):
        return [f'train.global_batch={t.global_batch}: must be divisible by data x fsdp = {shards}'
                + (f' times train.microbatches={t.microbatches}' if t.microbatches > 1 else '')
                + f'; valid: multiples of {shards * t.microbatches}']
    return []
