"""English number phrases to French (num2words, generated locally): an encoder-decoder
Transformer trained from scratch and scored by sacreBLEU on 500 held-out numbers.

    python -m scalelab.run --config experiments/translate_num2words.py --workdir runs/translate
    python -m scalelab.translate --workdir runs/translate --text "seven hundred and twelve thousand, three"

The test numbers are drawn before the training numbers and never trained on; the model
sees only words. `:tiny` is the same at a size that trains in seconds (tests, smoke runs).
"""
from scalelab.training import config

SIZES = {  # name: (d_model, layers each side, steps, train pairs, evaluation pairs)
    'default': (128, 3, 600, 30000, 500),
    'tiny': (32, 1, 40, 2000, 64),
}


def get_config(arg: str = 'default'):
    if arg not in SIZES:
        raise ValueError(f'experiments/translate_num2words.py:{arg}: unknown size; valid: {", ".join(SIZES)}')
    d_model, n_layers, steps, train_pairs, eval_pairs = SIZES[arg]
    cfg = config.base_config('seq2seq', 'translation')
    cfg.model.update(d_model=d_model, n_layers=n_layers, n_heads=4, max_len=24)
    cfg.data.update(train_pairs=train_pairs, eval_examples=eval_pairs)
    cfg.train.update(global_batch=64, steps=steps, log_every=50, eval_every=200, label_smoothing=0.1)
    cfg.optim.update(learning_rate=2e-3, warmup_steps=min(100, steps // 6), schedule='cosine', weight_decay=0.01)
    cfg.checkpoint.every_steps = 500
    return cfg
