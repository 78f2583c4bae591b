"""The default model (experiments/lm_stdlib.py) on the same stdlib source, tokenized
by a byte-level BPE of 4096 ids trained on its training files: the held-out files
are the byte-level run's, so the two runs' bits per byte compare.

    python -m scalelab.data.prepare --input "$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" \\
        --pattern '*.py' --tokenizer bpe --vocab-size 4096 --out corpora/stdlib_bpe4096 --num-proc 2
    python -m scalelab.run --config experiments/lm_stdlib_bpe.py --workdir runs/lm_bpe
    python -m scalelab.run --config experiments/lm_stdlib_bpe.py:DIR --workdir runs/x   # another prepared corpus

The model, batch (32 x 128 tokens), steps and optimizer are the default run's; a
BPE token covers about 3.5 bytes, so this run reads that much more text.
"""
from scalelab.training import recipes


def get_config(corpus: str = 'corpora/stdlib_bpe4096'):
    return recipes.byte_lm('small', corpus=corpus)
