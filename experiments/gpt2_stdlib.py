"""GPT-2's architecture with GPT-2's own tokenizer, on the stdlib source: the
"pretrained GPT-2" of the CPU pipeline (train, export to transformers, import,
fine-tune, generate; see the README's GPT-2 section). `:mini` trains on a CPU in
minutes; `:small` is GPT-2 small itself (124M parameters), for an accelerator.

    pip download --no-deps -d /tmp/whisper openai-whisper   # gpt2.tiktoken, GPT-2's BPE, inside
    tar xzf /tmp/whisper/openai_whisper-*.tar.gz -C /tmp/whisper --wildcards '*/gpt2.tiktoken'
    python -m scalelab.data.prepare --input "$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" \\
        --pattern '*.py' --tokenizer /tmp/whisper/openai_whisper-*/whisper/assets/gpt2.tiktoken --out corpora/stdlib_gpt2
    python -m scalelab.run --config experiments/gpt2_stdlib.py:mini --workdir runs/gpt2_mini
"""
from scalelab.training import recipes


def get_config(arg: str = 'mini'):
    sizes = {'mini': 'gpt2_mini', 'small': 'gpt2'}
    if arg not in sizes:
        raise ValueError(f'experiments/gpt2_stdlib.py:{arg}: unknown variant; valid: {", ".join(sizes)}')
    return recipes.byte_lm(sizes[arg], corpus='corpora/stdlib_gpt2')
