"""Decay branches as sweep points: one trunk, a cooldown from each of several of its checkpoints.

    python -m scalelab.run --config experiments/lm_stdlib.py:tiny --workdir runs/decay_branches/trunk \
        --config.optim.schedule=constant --config.train.steps=1200 --config.checkpoint.every_steps=100 \
        --config.checkpoint.keep=100 ...   # or: python benchmarks/decay_branches.py, which trains it
    python -m scalelab.sweep --config experiments/sweep_branches.py --workdir runs/sweep_branches

Each point restores the trunk at train.decay_start and decays linearly to zero over the last
20% of its own length: train.steps=0 makes a branch end at decay_start / (1 - decay_fraction),
so the one axis gives 500, 1,000 and 1,500 steps. Its results.csv row counts the trunk's
tokens (D); the settings are benchmarks/decay_branches.py's, so the points equal its branches.
"""
from ml_collections import ConfigDict

from scalelab.sweep import points


def get_config(arg: str = 'runs/decay_branches/trunk'):
    cfg = points.default_config()
    cfg.base = 'experiments/lm_stdlib.py:tiny'
    cfg.overrides = ConfigDict({
        'train.decay_from': arg, 'train.steps': 0, 'optim.schedule': 'wsd', 'optim.decay_fraction': 0.2,
        'optim.min_lr_ratio': 0.0, 'optim.learning_rate': 3e-3, 'optim.warmup_steps': 50,
        'train.log_every': 50, 'train.eval_every': 0, 'data.eval_tokens': 65536,
        'checkpoint.every_steps': 100, 'checkpoint.keep': 100,
    }, allow_dotted_keys=True)
    cfg.axes = ConfigDict({'train.decay_start': (400, 800, 1200)}, allow_dotted_keys=True)
    cfg.fit.update(law='power', metric='eval_loss')
    return cfg
