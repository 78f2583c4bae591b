"""Parameter-count sweep of the encoder-decoder on num2words English -> French: 6 widths
(2 layers each side) spanning about 40x in N, each trained on the same 300 steps of 64 pairs;
fits L(N) = E + A/N^alpha to the held-out loss and plots held-out BLEU, chrF and exact
match against N (metrics.png). About 10 minutes on 2 CPU cores.

    python -m scalelab.sweep --config experiments/sweep_translate_params.py --workdir runs/sweep_translate
"""
from ml_collections import ConfigDict

from scalelab.sweep import points


def get_config(arg: str | None = None):
    cfg = points.default_config()
    cfg.base = 'experiments/translate_num2words.py'
    cfg.overrides = ConfigDict({
        'model.n_layers': 2, 'train.steps': 300, 'train.log_every': 25,
        'train.eval_every': 0, 'checkpoint.every_steps': 1000,
    }, allow_dotted_keys=True)
    cfg.axes = ConfigDict({'model.d_model': (16, 24, 32, 48, 64, 96)}, allow_dotted_keys=True)
    cfg.fit.update(law='power', metric='eval_loss', bootstrap=200,
                   also=('eval_bleu', 'eval_chrf', 'eval_exact_match'))
    return cfg
