"""Fine-tune a GPT-2 (imported from Hugging Face with `python -m scalelab.hf import`)
on a local corpus prepared with its own tokenizer, then generate and export.

    python -m scalelab.hf import --from gpt2_dir --workdir runs/gpt2_hf       # save_pretrained's files
    python -m scalelab.data.prepare --input /usr/share/common-licenses --tokenizer runs/gpt2_hf \\
        --eval-fraction 0.25 --out corpora/licenses_gpt2
    python -m scalelab.run --config experiments/finetune_gpt2.py:runs/gpt2_hf --workdir runs/gpt2_ft
    python -m scalelab.generate --workdir runs/gpt2_ft --prompt "This program is free software"
    python -m scalelab.hf export --workdir runs/gpt2_ft --out gpt2_ft_hf

The argument is the imported workdir: the model section is read from its
config.json, so any GPT-2 size fine-tunes with this file.
"""
import json
from pathlib import Path

from scalelab.training import config


def get_config(source: str = 'runs/gpt2_hf'):
    cfg = config.base_config('transformer', 'corpus')
    model = json.loads((Path(source) / 'config.json').read_text())['model']
    cfg.model.update(model)
    cfg.data.update(path='corpora/licenses_gpt2', tokenizer=source, seq_len=min(128, model['max_len']),
                    eval_tokens=32768)
    cfg.train.update(init_from=source, global_batch=16, steps=200, log_every=20, eval_every=50)
    cfg.optim.update(learning_rate=6e-4, warmup_steps=10, schedule='cosine', weight_decay=0.0)
    cfg.checkpoint.every_steps = 100
    return cfg
