"""Learning rate x width, under the standard parametrization and muP: under muP
the best learning rate stays put as the model widens (Yang et al., Tensor Programs V).

    python -m scalelab.sweep --config experiments/mup_lr_transfer.py --workdir runs/mup

writes results.csv, fit.json (the best learning rate per width for each
parametrization) and scaling.png (loss against learning rate, one curve per width).
"""
from ml_collections import ConfigDict

from scalelab.sweep import points


def get_config(arg: str | None = None):
    cfg = points.default_config()
    cfg.base = 'experiments/lm_stdlib.py:tiny'
    cfg.overrides = ConfigDict({
        'model.n_layers': 2, 'model.head_dim': 16, 'model.d_ff': 0, 'model.tie_embeddings': False,
        'model.mup_base_width': 64, 'data.seq_len': 64, 'train.global_batch': 16, 'train.steps': 200,
        'train.log_every': 50, 'train.eval_every': 0, 'data.eval_tokens': 16384, 'optim.warmup_steps': 10,
        'optim.weight_decay': 0.0, 'checkpoint.every_steps': 1000,
    }, allow_dotted_keys=True)
    cfg.axes = ConfigDict({
        'model.parametrization': ('standard', 'mup'),
        'model.d_model': (64, 128, 256),
        'optim.learning_rate': (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    }, allow_dotted_keys=True)
    cfg.fit.update(law='lr_transfer', metric='eval_loss', bootstrap=0)
    return cfg
