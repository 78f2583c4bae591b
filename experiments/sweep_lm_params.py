"""Parameter-count sweep of the byte-level stdlib LM: 6 sizes spanning 43x in
non-embedding parameters (d_model = 16 n_layers, n_layers 2..7), each trained on
the same 2.5M bytes (about 30 minutes on 2 CPU cores); fits L(N) = E + A/N^alpha.

    python -m scalelab.sweep --config experiments/sweep_lm_params.py --workdir runs/sweep
    python -m scalelab.sweep --config experiments/sweep_lm_params.py:tiny --workdir runs/sweep_tiny

`:bpe` is the same sweep on the BPE-4096 corpus of the same files (experiments/lm_stdlib_bpe.py
says how to prepare it): the same non-embedding sizes and two smaller ones, 2.5M tokens (BPE
tokens, about 8.4 MB of text), scored on the held-out files' first 39,296 tokens, about the
131,072 bytes the byte sweep scores on, so the two compare in bits per byte:

    python -m scalelab.sweep compare --a runs/sweep --b runs/sweep_bpe --metric bits_per_byte
"""
from ml_collections import ConfigDict

from scalelab.sweep import points

# Targets sit on the aspect-ratio ladder, where small widths fit exactly.
TARGETS = {
    'default': (2.47e4, 8.33e4, 1.97e5, 3.85e5, 6.65e5, 1.055e6),  # d_model 32..112, head_dim 16
    'tiny': (6.2e3, 2.09e4, 4.94e4),                                # d_model 16..32, head_dim 8: seconds each
}
# BPE: the same sizes and two smaller ones (appended, so earlier points keep their names): a BPE model's
# head (4096 x d_model) makes it far better per byte at equal non-embedding size, and the small ones reach
# down into the losses (in bits per byte) that the byte-level sweep covers, where the two compare.
TARGETS['bpe'] = TARGETS['default'] + (6.2e3, 1.24e4)


def get_config(arg: str = 'default'):
    if arg not in TARGETS:
        raise ValueError(f'experiments/sweep_lm_params.py:{arg}: unknown variant; valid: {", ".join(TARGETS)}')
    cfg = points.default_config()
    cfg.base = 'experiments/lm_stdlib_bpe.py' if arg == 'bpe' else 'experiments/lm_stdlib.py'
    tiny = arg == 'tiny'
    cfg.overrides = ConfigDict({
        'data.seq_len': 32 if tiny else 128,
        'train.global_batch': 16 if tiny else 32,
        'train.log_every': 10 if tiny else 50,
        'train.eval_every': 0,               # evaluate once, at the end
        'data.eval_tokens': 2048 if tiny else 131072,  # the same held-out bytes for every point
        'optim.learning_rate': 3e-3,
        'checkpoint.every_steps': 10 if tiny else 200,
    }, allow_dotted_keys=True)
    if arg == 'bpe':  # about the byte sweep's 131,072 held-out bytes, at 3.34 bytes per token
        cfg.overrides['data.eval_tokens'] = 39296
    cfg.axes = ConfigDict({
        'target_params': TARGETS[arg],
        'train.tokens': (1.6e4 if tiny else 2.5e6,),
    }, allow_dotted_keys=True)
    cfg.shape.update(aspect_ratio=8.0 if tiny else 16.0, head_dim=8 if tiny else 16, ff_ratio=4.0,
                     count='non_embedding')
    cfg.fit.update(law='power', metric='eval_loss', bootstrap=200)
    return cfg
