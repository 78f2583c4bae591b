"""Decay branches: several Chinchilla points (one model, several token counts) from one run.

A trunk trains at a constant learning rate (after warmup) and keeps checkpoints; a branch
(train.decay_from = the trunk's workdir, train.decay_start = one of its checkpoint steps)
restores the trunk's whole state there, optimizer and data position included, and decays
the rate linearly to the end of its own train.steps (a WSD schedule whose stable phase ends
at decay_start). Up to decay_start a branch is its trunk, step for step, so it equals one
uninterrupted WSD run of its length (Hägele et al. 2024; OLMo-core's ladder). Each branch
is an ordinary workdir: it resumes from its own checkpoints once it has one, and a sweep
over train.decay_start makes each branch a point.
"""
from __future__ import annotations

from pathlib import Path

from scalelab.core import checkpoint
from scalelab.core import workdir as workdir_lib
from scalelab.core.errors import ConfigError

# What a branch may set apart from its trunk: its length, its schedule's decay, where it starts.
MAY_DIFFER = ('train.steps', 'train.tokens', 'train.flops', 'train.decay_from', 'train.decay_start',
              'optim.schedule', 'optim.decay_fraction', 'optim.decay_steps', 'optim.min_lr_ratio')


def check(cfg, conflicts) -> None:
    """Refuse a branch its trunk cannot give: no run there, a trunk whose rate is not constant,
    a start that is not one of its checkpoints (or past its end), or a trunk trained otherwise
    (every key but MAY_DIFFER, compared as a resume is: conflicts(saved, new) -> [differences])."""
    trunk, start = Path(cfg.train.decay_from), cfg.train.decay_start
    saved = workdir_lib.read_json(trunk / 'config.json', 'train.decay_from must be a run\'s workdir (the trunk)')
    where = f'train.decay_from={str(trunk)!r}'
    if saved['optim']['schedule'] != 'constant':
        raise ConfigError([f'{where}: its optim.schedule is {saved["optim"]["schedule"]!r}; a branch starts from '
                           'a constant learning rate (train the trunk with optim.schedule=constant)'])
    if start > saved['train']['steps']:
        raise ConfigError([f'train.decay_start={start}: past the trunk\'s end (step {saved["train"]["steps"]})'])
    steps = checkpoint_steps(trunk)
    if start not in steps:
        raise ConfigError([f'train.decay_start={start}: not one of the trunk\'s checkpoints (steps '
                           f'{", ".join(map(str, steps)) or "none"}); keep more with checkpoint.keep'])
    new = cfg.to_dict()
    for key in MAY_DIFFER:  # as the trunk has them: only the rest must agree
        section, name = key.split('.')
        new[section][name] = saved[section].get(name)
    found = conflicts(saved, new)
    if found:
        raise ConfigError([f'{where}: the trunk was trained otherwise: {"; ".join(found)}'])


def checkpoint_steps(workdir: Path) -> list[int]:
    directory = Path(workdir) / 'checkpoints'
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def restore_trunk(cfg, target) -> tuple[object, dict]:
    """(state, record) of the trunk at train.decay_start, laid out as `target`."""
    trunk = checkpoint.Checkpointer(Path(cfg.train.decay_from) / 'checkpoints', every_steps=1, keep=1,
                                    async_save=False)
    try:
        return trunk.restore(cfg.train.decay_start, target)
    finally:
        trunk.close()
