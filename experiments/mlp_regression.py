"""MLP student regressing a random teacher MLP: a clean target for parameter-count scaling.

    python -m scalelab.run --config experiments/mlp_regression.py --workdir runs/regression
    ... --config.model.width=512 --config.data.width=128   # student and teacher sizes
"""
from scalelab.training import config


def get_config(arg: str | None = None):
    cfg = config.base_config('mlp', 'teacher')
    cfg.data.update(in_dim=16, out_dim=1, width=64, depth=2, activation='tanh', noise=0.0)
    cfg.model.update(width=128, depth=2, activation='gelu')
    cfg.train.update(global_batch=256, steps=3000, log_every=100, eval_every=1000)
    cfg.optim.update(name='adamw', learning_rate=3e-3, warmup_steps=100, weight_decay=0.0, schedule='cosine')
    cfg.checkpoint.every_steps = 1000
    return cfg
