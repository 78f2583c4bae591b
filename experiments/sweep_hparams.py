"""The best learning rate and batch size as power laws in compute (DeepSeek LLM 2024, 3.1),
at the scale of this machine: the tiny byte LM at three compute budgets, each a 3 x 4 grid
of learning rate and batch (batches of 1 to 8 sequences: at these budgets the best batch is
small, benchmarks/results/hparams/README.md).

    python -m scalelab.sweep --config experiments/sweep_hparams.py --workdir runs/hparams --parallel 2

Each point trains for its budget's FLOPs (C = 6 N D) with a cosine to its own end after a
5% warmup; the fit (sweep fit --law hparams) puts a quadratic surface in (log lr, log
batch) through each budget's twelve runs and the power laws through the surfaces' vertices.
"""
from ml_collections import ConfigDict

from scalelab.sweep import points


def get_config(arg: str | None = None):
    cfg = points.default_config()
    cfg.base = 'experiments/lm_stdlib.py:tiny'
    cfg.overrides = ConfigDict({
        'train.eval_every': 0, 'train.log_every': 25, 'data.eval_tokens': 32768, 'optim.schedule': 'cosine',
        'optim.warmup_fraction': 0.05, 'checkpoint.every_steps': 100000,
    }, allow_dotted_keys=True)
    cfg.axes = ConfigDict({
        'train.flops': (3e11, 1e12, 3e12),
        'optim.learning_rate': (1e-3, 3e-3, 1e-2),
        'train.global_batch': (1, 2, 4, 8),
    }, allow_dotted_keys=True)
    cfg.fit.update(law='hparams', metric='eval_loss', bootstrap=200)
    return cfg
