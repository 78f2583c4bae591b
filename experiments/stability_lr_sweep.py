"""A small-scale proxy for large-scale instabilities (Wortsman et al. 2023): the learning
rate over three decades, at three widths, with and without qk-layernorm and z-loss.

    python -m scalelab.sweep --config experiments/stability_lr_sweep.py --workdir runs/stability --parallel 2

Writes results.csv (with each run's largest attention logit), fit.json (LR sensitivity
per variant and width: the mean over learning rates of min(final loss, initial loss)
minus the best loss) and scaling.png (final loss and largest attention logit against
the learning rate, a panel per variant). What the paper's 1e5-step runs at up to 1.2B
parameters become here: 2 layers of width 32 to 128, 150 steps of 16 x 64 bytes.
The rest follows the paper: AdamW (b2 0.95), warmup then cosine, clipping at 1,
independent weight decay 1e-4, z-loss 1e-4 where it is on.
"""
from ml_collections import ConfigDict

from scalelab.sweep import points


def get_config(arg: str | None = None):
    cfg = points.default_config()
    cfg.base = 'experiments/lm_stdlib.py:tiny'
    cfg.overrides = ConfigDict({
        'model.n_layers': 2, 'model.head_dim': 16, 'model.d_ff': 0, 'model.tie_embeddings': False,
        'data.seq_len': 64, 'train.global_batch': 16, 'train.steps': 150, 'train.log_every': 25,
        'train.eval_every': 0, 'data.eval_tokens': 16384, 'optim.warmup_steps': 15, 'optim.schedule': 'cosine',
        'optim.grad_clip': 1.0, 'optim.weight_decay': 1e-4, 'optim.independent_wd': True,
        'checkpoint.every_steps': 1000,
    }, allow_dotted_keys=True)
    cfg.axes = ConfigDict({
        'model.d_model': (32, 64, 128),
        'model.qk_norm': (False, True),
        'train.z_loss': (0.0, 1e-4),
        'optim.learning_rate': tuple(round(10 ** (e / 2), 6) for e in range(-6, 1)),  # 1e-3 .. 1
    }, allow_dotted_keys=True)
    cfg.fit.update(law='lr_sensitivity', metric='eval_loss', bootstrap=0)
    return cfg
