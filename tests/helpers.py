"""Small configs and workdir readers shared by the tests."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


import jax
import numpy as np

from scalelab.core import parallel
from scalelab.data import text
from scalelab.training import config, plan, train

REPO = Path(__file__).resolve().parents[1]
TEST_CACHE = Path(os.environ.get('SCALELAB_TEST_CACHE', Path.home() / '.cache' / 'scalelab' / 'jax_test_cache'))
STDLIB_JSON = str(text.stdlib_dir() / 'json')  # five small files: a quick real corpus
HF_CONTEXT = 64  # positions of the random GPT-2 the conftest's hf_dir fixture saves


def noisy(loss, rel, seed):
    """`loss` times log-normal noise of relative size `rel`: what a measured loss table looks like."""
    return loss * np.exp(np.random.default_rng(seed).normal(0, rel, size=np.shape(loss)))


def every_pair(N_axis, D_axis) -> list[np.ndarray]:
    """(N, D) columns holding every pair of the two axes: a Chinchilla table's full grid."""
    return [a.ravel() for a in np.meshgrid(N_axis, D_axis)]


def tiny_lm(**overrides):
    """A 2-layer LM small enough that 20 steps take a second or two."""
    cfg = config.base_config('transformer')
    cfg.model.update(d_model=32, n_layers=2, n_heads=4, d_ff=64)
    cfg.data.update(path=STDLIB_JSON, seq_len=32, eval_fraction=0.2, eval_tokens=1024)
    cfg.train.update(global_batch=16, steps=20, log_every=1, eval_every=0)
    cfg.optim.update(learning_rate=1e-2, warmup_steps=2)
    cfg.checkpoint.update(every_steps=5, async_save=False)
    return with_overrides(cfg, overrides)


def save_random_gpt2(directory: Path, context: int) -> Path:
    """A random GPT-2 (2 layers, d 32) with a byte-level BPE of 300 ids trained on the json
    package's source, as save_pretrained writes them: an HF model without a hub."""
    import torch
    import transformers

    from scalelab.data import tokenizer
    bpe = tokenizer.train_bpe([p.read_text() for p in text.list_files(STDLIB_JSON, '*.py')], 300)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe.to_hf(), eos_token='<|endoftext|>')
    fast.save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=300, n_positions=context, n_embd=32, n_layer=2, n_head=4,
                                     initializer_range=0.2, bos_token_id=bpe.eos_id, eos_token_id=bpe.eos_id)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def with_overrides(cfg, overrides: dict):
    """cfg with {'section.key': value} set."""
    for key, value in overrides.items():
        section, name = key.split('.')
        cfg[section][name] = value
    return cfg


def lowered_train_step(cfg):
    """(resolved cfg, the train step lowered on one device for a batch of cfg's shape): for
    inspecting what XLA compiles without running it."""
    cfg.mesh.data = 1
    the_plan = plan.make(cfg, 1)
    cfg = the_plan.cfg
    prepared = train.setup(the_plan, parallel.make_mesh(cfg.mesh, jax.devices()[:1]))
    shape = (cfg.train.global_batch, cfg.data.seq_len)
    batch = {k: jax.ShapeDtypeStruct(shape, np.int32) for k in ('inputs', 'targets')}
    return cfg, jax.jit(train.train_step, static_argnums=0).lower(prepared.spec, prepared.abstract_state, batch)


def losses(workdir: Path) -> list[float]:
    lines = [json.loads(line) for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
    return [line['loss'] for line in lines if 'loss' in line]


def run_cli(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE),
           **(env_extra or {})}
    return subprocess.run([sys.executable, '-m', 'scalelab.run', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, **kwargs)


GPT2_TIKTOKEN_SHA256 = '306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930'


def gpt2_tiktoken() -> Path:
    """GPT-2's real BPE ranks, from the openai-whisper source package on PyPI
    (`pip download --no-deps`), checked by hash and cached under ~/.cache/scalelab."""
    cached = Path.home() / '.cache' / 'scalelab' / 'gpt2.tiktoken'
    if not cached.exists():
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:',
                            'openai-whisper==20250625', '-d', d], check=True, capture_output=True, timeout=300)
            with tarfile.open(next(Path(d).glob('*.tar.gz'))) as archive:
                member = next(m for m in archive.getmembers() if m.name.endswith('whisper/assets/gpt2.tiktoken'))
                content = archive.extractfile(member).read()
        if hashlib.sha256(content).hexdigest() != GPT2_TIKTOKEN_SHA256:
            raise RuntimeError('gpt2.tiktoken from openai-whisper has an unexpected sha256')
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix('.tmp')
        tmp.write_bytes(content)
        tmp.replace(cached)
    return cached
