"""Byte-level LSTM language model on the Python standard library's source (no download).

    python -m scalelab.run --config experiments/lstm_stdlib.py --workdir runs/lstm
"""
from scalelab.training import config


def get_config(arg: str | None = None):
    cfg = config.base_config('lstm', 'text')
    cfg.model.update(d_embed=64, d_hidden=256, n_layers=1)
    cfg.data.seq_len = 128
    cfg.train.update(global_batch=32, steps=600, log_every=20, eval_every=200)
    cfg.optim.update(learning_rate=3e-3, warmup_steps=30, weight_decay=0.0, grad_clip=1.0)
    cfg.checkpoint.every_steps = 200
    return cfg
