"""Fine-tune the stdlib byte LM on English prose: the license texts every Debian
system ships in /usr/share/common-licenses.

    python -m scalelab.run --config experiments/lm_stdlib.py --workdir runs/lm            # the source
    python -m scalelab.run --config experiments/finetune_stdlib_to_licenses.py:runs/lm --workdir runs/ft
    ... --config.train.freeze='^(embed|blocks\\.0)\\.'                                     # keep layers fixed

The argument is the source: a run workdir, a checkpoint directory or a .safetensors file.
"""
from scalelab.training import recipes


def get_config(source: str = 'runs/lm'):
    cfg = recipes.byte_lm('small')  # the source's architecture
    cfg.data.update(path='/usr/share/common-licenses', pattern='*', eval_fraction=0.25)
    cfg.train.update(init_from=source, steps=200, log_every=10, eval_every=50)
    cfg.optim.update(learning_rate=1e-3, warmup_steps=10, schedule='cosine')
    cfg.checkpoint.every_steps = 100
    return cfg
