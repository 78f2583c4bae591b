"""Learning rate x width x seed, under the standard parametrization and muP: under muP
the best learning rate stays put as the model widens (Yang et al., Tensor Programs V, Figure 1).

    python -m scalelab.sweep --config experiments/mup_lr_transfer.py --workdir runs/mup --parallel 2

Widths 32 to 256 (8x), 3 seeds, 7 learning rates half a decade apart, no gradient
clipping (its effect would depend on width) and no weight decay. muP's base width is 64,
so muP and SP are the same model there. Writes results.csv, fit.json (each width's
optimum: the vertex of a parabola in log10(lr) through the seed-averaged loss, with a
standard error from the seeds' own optima; an optimum at the grid's edge is flagged) and
scaling.png (loss against log2 lr, a curve per width, SP beside muP).
`experiments/mup_lr_transfer.py:qk_norm` runs the same grid with qk-layernorm;
`:near_optimum` runs muP alone on a quarter-decade grid around its optimum (10^-2.5)
with 5 seeds: whether wider is better there, with more power than 3 seeds give;
`:long` trains muP 4x longer (600 steps, 60 warmup, 4x the evaluation tokens) on a
quarter-decade grid 10^-3..10^-2 with 4 seeds: at 150 steps the runs above the optimum
scatter by up to 0.3 nats between seeds, which hides the width ordering;
`:long_qk_norm` is the experiment the README reports first: SP and muP, 600 steps, with
qk-layernorm (without it the attention logits grow at the rates just above the optimum
and the runs there turn seed-dependent), widths 16 to 128 (8x, 38 minutes on 2 cores;
width 256 under both would add about 50), 7 learning rates a quarter decade apart from 10^-3;
`:long_qk_norm_256` adds width 256 under muP alone on the same grid (21 runs, 24 minutes).
"""
from ml_collections import ConfigDict

from scalelab.sweep import points


def get_config(arg: str | None = None):
    cfg = points.default_config()
    cfg.base = 'experiments/lm_stdlib.py:tiny'
    cfg.overrides = ConfigDict({
        'model.n_layers': 2, 'model.head_dim': 16, 'model.d_ff': 0, 'model.tie_embeddings': False,
        'model.mup_base_width': 64, 'data.seq_len': 64, 'train.global_batch': 16, 'train.steps': 150,
        'train.log_every': 50, 'train.eval_every': 0, 'data.eval_tokens': 16384, 'optim.warmup_steps': 10,
        'optim.weight_decay': 0.0, 'optim.grad_clip': 0.0, 'checkpoint.every_steps': 1000,
    }, allow_dotted_keys=True)
    if arg == 'qk_norm':  # holds attention logits down at the high learning rates (stability_lr_sweep.py)
        cfg.overrides['model.qk_norm'] = True
    elif arg in ('long', 'long_qk_norm', 'long_qk_norm_256'):
        cfg.overrides.update({'train.steps': 600, 'optim.warmup_steps': 60, 'data.eval_tokens': 65536,
                              'train.log_every': 100, 'checkpoint.every_steps': 10000})
        cfg.overrides['model.qk_norm'] = arg.startswith('long_qk_norm')
    elif arg and arg != 'near_optimum':
        raise ValueError(f'experiments/mup_lr_transfer.py:{arg}: unknown variant; valid: qk_norm, near_optimum, '
                         'long, long_qk_norm, long_qk_norm_256 (or none)')
    cfg.axes = ConfigDict({
        'model.d_model': (32, 64, 128, 256),
        'model.parametrization': ('standard', 'mup'),
        'optim.learning_rate': tuple(round(10 ** (e / 2), 6) for e in range(-7, 0)),  # 10^-3.5 .. 10^-0.5
        'seed': (0, 1, 2),
    }, allow_dotted_keys=True)
    if arg == 'near_optimum':
        cfg.axes['model.parametrization'] = ('mup',)
        cfg.axes['optim.learning_rate'] = tuple(round(10 ** (e / 4), 6) for e in (-11, -10, -9))  # 10^-2.75..-2.25
        cfg.axes['seed'] = (0, 1, 2, 3, 4)
    elif arg == 'long':
        cfg.axes['model.parametrization'] = ('mup',)
        cfg.axes['optim.learning_rate'] = tuple(round(10 ** (e / 4), 6) for e in range(-12, -7))  # 10^-3..-2
        cfg.axes['seed'] = (0, 1, 2, 3)
    elif arg in ('long_qk_norm', 'long_qk_norm_256'):
        cfg.axes['model.d_model'] = (16, 32, 64, 128) if arg == 'long_qk_norm' else (256,)
        cfg.axes['model.parametrization'] = ('standard', 'mup') if arg == 'long_qk_norm' else ('mup',)
        cfg.axes['optim.learning_rate'] = tuple(round(10 ** (e / 4), 6) for e in range(-12, -5))  # 10^-3..-1.5
    cfg.fit.update(law='lr_transfer', metric='eval_loss', bootstrap=0)
    return cfg
