"""GPT-2 in and out of Hugging Face `transformers`, checked against transformers itself
(a small random-init GPT2LMHeadModel saved with save_pretrained, run in float32 on CPU)."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from scalelab.core import weights
from scalelab.data import prepare, text, tokenizer
from scalelab.training import loop
from scalelab.use import evaluate, generate, hf, inference
from tests.helpers import HF_CONTEXT, REPO, STDLIB_JSON, TEST_CACHE, tiny_lm

TEXT = (text.stdlib_dir() / 'json' / 'encoder.py').read_text()
CONTEXT = HF_CONTEXT  # the positions of the conftest's random GPT-2 (hf_dir, imported)


def hf_model(directory):
    return transformers.GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32).eval()


def test_loss_on_a_text_equals_transformers(hf_dir, imported):
    lm = inference.load(imported)
    ids = lm.tokenizer.encode(TEXT)
    assert len(ids) > 3 * CONTEXT  # scored in several windows
    model = hf_model(hf_dir)
    losses, counts = [], []
    with torch.no_grad():  # transformers' own loss, window by window (the same windows: consecutive, no overlap)
        for start in range(0, len(ids) - 1, CONTEXT):
            inputs = torch.tensor([ids[start:start + CONTEXT]])
            targets = torch.tensor(ids[start + 1:start + CONTEXT + 1])
            logits = model(inputs).logits[0, :len(targets)]
            losses.append(float(torch.nn.functional.cross_entropy(logits, targets, reduction='sum')))
            counts.append(len(targets))
    reference = sum(losses) / sum(counts)
    result = evaluate.score_text(lm, TEXT, batch=4)
    assert result['tokens'] == len(ids) - 1
    assert result['loss'] == pytest.approx(reference, abs=1e-4)
    # bits per byte: transformers' summed nats, in bits, over the UTF-8 bytes of the scored tokens (all but the
    # first, which is context only), counted from the text itself
    hf_tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(hf_dir)
    scored_bytes = len(TEXT.encode('utf-8')) - len(hf_tokenizer.decode(ids[:1]).encode('utf-8'))
    assert result['bytes'] == scored_bytes
    assert result['bits_per_byte'] == pytest.approx(sum(losses) / math.log(2) / scored_bytes, rel=1e-4)
    short = lm.tokenizer.encode(TEXT)[:CONTEXT]  # within one context: transformers' labels= loss itself
    with torch.no_grad():
        expected = float(model(torch.tensor([short]), labels=torch.tensor([short])).loss)
    assert evaluate.score_text(lm, lm.tokenizer.decode(short), batch=1)['loss'] == pytest.approx(expected, abs=1e-4)


def test_evaluate_cli_prints_loss_and_bits_per_byte(imported, tmp_path):
    (tmp_path / 'sample.txt').write_text(TEXT)
    done = subprocess.run([sys.executable, '-m', 'scalelab.evaluate', f'--workdir={imported}',
                           f'--text={tmp_path / "sample.txt"}'], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    expected = evaluate.score_text(inference.load(imported), TEXT, batch=8)
    assert lines[0] == f'loss {expected["loss"]:.6f}'
    assert lines[1] == f'bits_per_byte {expected["bits_per_byte"]:.6f}'
    n_bytes = len(TEXT.encode()) - len(inference.load(imported).tokenizer.decode(
        inference.load(imported).tokenizer.encode(TEXT)[:1]).encode())
    assert expected['bytes'] == n_bytes  # every byte but the first token's is scored


def test_greedy_generation_yields_transformers_tokens(hf_dir, imported):
    lm = inference.load(imported)
    prompt = lm.tokenizer.encode('def encode(self, o):')
    with torch.no_grad():
        reference = hf_model(hf_dir).generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                              attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                              pad_token_id=lm.tokenizer.eos_id)[0, len(prompt):].tolist()
    tokens, pad = generate.pad_prompts([prompt])
    ours = generate.generate_cached(lm.graphdef, lm.params, jnp.asarray(tokens), jnp.asarray(pad),
                                    jax.random.key(0), max_new=24, temperature=0.0, top_k=0)
    assert np.asarray(ours)[0].tolist() == reference
    assert len(set(reference)) > 3  # not one repeated token: the comparison has teeth


def test_export_loads_in_transformers_with_the_same_logits_and_tokenizer(hf_dir, imported, tmp_path):
    hf.export_dir(imported, tmp_path / 'out')
    assert sorted(os.listdir(tmp_path / 'out')) == ['config.json', 'model.safetensors', 'tokenizer.json',
                                                    'tokenizer_config.json']
    ids = torch.tensor([inference.load(imported).tokenizer.encode(TEXT)[:CONTEXT]])
    with torch.no_grad():
        original, exported = hf_model(hf_dir)(ids).logits, hf_model(tmp_path / 'out')(ids).logits
    np.testing.assert_allclose(exported.numpy(), original.numpy(), atol=1e-5, rtol=0)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path / 'out')
    assert loaded(TEXT)['input_ids'] == inference.load(imported).tokenizer.encode(TEXT)
    assert loaded.eos_token == '<|endoftext|>'


def test_a_scalelab_trained_gpt2_exports_with_its_own_logits(tmp_path):
    """A model trained here (GPT-2's architecture, stacked layers, byte tokenizer)
    gives transformers the logits scalelab computes."""
    cfg = tiny_lm(**{'model.norm': 'layernorm', 'model.mlp': 'gelu', 'model.position': 'learned',
                     'model.use_bias': True, 'model.max_len': 32, 'model.scan_layers': True,
                     'model.tie_embeddings': False, 'train.steps': 5})
    loop.run(cfg, tmp_path / 'run')
    hf.export_dir(tmp_path / 'run', tmp_path / 'out')
    lm = inference.load(tmp_path / 'run')
    ids = np.asarray([list(TEXT[:32].encode())], np.int32)
    ours = np.asarray(nnx.merge(lm.graphdef, lm.params)(jnp.asarray(ids)))
    with torch.no_grad():
        theirs = hf_model(tmp_path / 'out')(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / 'out')(TEXT[:50])['input_ids'] == \
        list(TEXT[:50].encode())


def changed_copy(hf_dir, tmp_path, edit):
    import shutil
    copy = tmp_path / 'copy'
    shutil.copytree(hf_dir, copy)
    edit(copy)
    return copy


def edit_config(**changes):
    def edit(directory):
        config = json.loads((directory / 'config.json').read_text())
        config.update(changes)
        (directory / 'config.json').write_text(json.dumps(config))
    return edit


def as_pickle_only(directory):
    (directory / 'model.safetensors').rename(directory / 'pytorch_model.bin')


@pytest.mark.parametrize('edit, expected', [
    (edit_config(activation_function='relu'),
     r"activation_function='relu' is a GPT-2 option scalelab does not implement; valid: 'gelu_new'"),
    (edit_config(scale_attn_by_inverse_layer_idx=True), r'scale_attn_by_inverse_layer_idx=True is a GPT-2 option'),
    (edit_config(model_type='llama'), r"model_type='llama'; scalelab imports model_type='gpt2'"),
    (edit_config(vocab_size=200), r'the tokenizer has 300 ids but the model \(config.json vocab_size\) has 200'),
    (as_pickle_only, r'has pytorch_model.bin but no model.safetensors; scalelab does not load pickle files'),
    (lambda d: (d / 'config.json').write_text('{"model_type": "gpt2", "n_'), r'config.json: corrupt JSON'),
])
def test_bad_hf_directories_get_one_clear_error(hf_dir, tmp_path, edit, expected):
    with pytest.raises(hf.HFError, match=expected):
        hf.import_dir(changed_copy(hf_dir, tmp_path, edit), tmp_path / 'w')
    assert not (tmp_path / 'w').exists()


def test_a_model_without_a_gpt2_form_is_not_exported(tmp_path):
    loop.run(tiny_lm(**{'train.steps': 2}), tmp_path / 'run')  # rmsnorm, rope
    with pytest.raises(hf.HFError, match=r"model.norm='rmsnorm': GPT-2 has norm='layernorm'"):
        hf.export_dir(tmp_path / 'run', tmp_path / 'out')


def test_cli_errors_are_one_line_with_exit_2(hf_dir, tmp_path):
    copy = changed_copy(hf_dir, tmp_path, as_pickle_only)
    done = subprocess.run([sys.executable, '-m', 'scalelab.hf', 'import', '--from', str(copy), '--workdir',
                           str(tmp_path / 'w')], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert 'does not load pickle' in done.stderr


@pytest.mark.slow
def test_pipeline_import_finetune_generate_export(hf_dir, imported, tmp_path):
    """The README's GPT-2 pipeline: import, prepare a corpus with the model's tokenizer,
    fine-tune (experiments/finetune_gpt2.py), generate, export."""
    env = {**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)}
    prepare.prepare(['/usr/share/common-licenses' if os.path.isdir('/usr/share/common-licenses') else STDLIB_JSON],
                    str(imported), tmp_path / 'corpus', eval_fraction=0.25, log=lambda *_: None)
    done = subprocess.run([sys.executable, '-m', 'scalelab.run', f'--config=experiments/finetune_gpt2.py:{imported}',
                           f'--workdir={tmp_path / "ft"}', f'--config.data.path={tmp_path / "corpus"}',
                           '--config.data.seq_len=32', '--config.train.steps=6', '--config.train.eval_every=3',
                           '--config.train.log_every=3'], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    evals = [json.loads(line)['eval_loss'] for line in (tmp_path / 'ft' / 'metrics.jsonl').read_text().splitlines()
             if 'eval_loss' in line]
    assert evals[-1] < evals[0]  # fine-tuning lowers the held-out loss
    done = subprocess.run([sys.executable, '-m', 'scalelab.generate', f'--workdir={tmp_path / "ft"}',
                           '--prompt', 'Permission', '--max-new-tokens', '8', '--temperature', '0'], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith('Permission')
    hf.export_dir(tmp_path / 'ft', tmp_path / 'ft_hf')
    assert hf_model(tmp_path / 'ft_hf').config.n_layer == 2


def run_hf(args):
    return subprocess.run([sys.executable, '-m', 'scalelab.hf', *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, 'SCALELAB_COMPILATION_CACHE': str(TEST_CACHE)})


def test_export_never_overwrites_a_workdir_or_other_files_and_is_all_or_nothing(imported, tmp_path, monkeypatch):
    """hf export into the run's own workdir replaced its config.json; into any non-empty
    directory it replaced config.json and model.safetensors without a word."""
    before = {p.name: p.read_bytes() for p in imported.iterdir() if p.is_file()}
    own = run_hf(['export', '--workdir', str(imported), '--out', str(imported)])
    assert own.returncode == 2 and own.stderr.strip() == (
        f"error: --out {imported}: is a run's workdir; writing there would replace its files (config.json, ...); "
        'choose another --out')
    assert {p.name: p.read_bytes() for p in imported.iterdir() if p.is_file()} == before
    theirs = tmp_path / 'downloaded_gpt2'
    theirs.mkdir()
    (theirs / 'config.json').write_text('{"theirs": true}')
    refused = run_hf(['export', '--workdir', str(imported), '--out', str(theirs)])
    assert refused.returncode == 2 and 'is a non-empty directory; pass --overwrite' in refused.stderr
    assert (theirs / 'config.json').read_text() == '{"theirs": true}'
    (tmp_path / 'file').write_text('x')
    on_file = run_hf(['export', '--workdir', str(imported), '--out', str(tmp_path / 'file')])
    assert on_file.returncode == 2 and on_file.stderr.strip() == (
        f'error: --out {tmp_path / "file"}: is a file, not a directory; choose another --out')
    # a failure half-way (here: writing the tokenizer) leaves the old directory as it was, and no temporary one
    original = tokenizer.Tokenizer.to_hf
    monkeypatch.setattr(tokenizer.Tokenizer, 'to_hf', lambda self: (_ for _ in ()).throw(OSError('disk full')))
    with pytest.raises(OSError, match='disk full'):
        hf.export_dir(imported, theirs, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['downloaded_gpt2', 'file']
    assert (theirs / 'config.json').read_text() == '{"theirs": true}'
    monkeypatch.setattr(tokenizer.Tokenizer, 'to_hf', original)
    hf.export_dir(imported, theirs, overwrite=True)
    assert sorted(p.name for p in theirs.iterdir()) == ['config.json', 'model.safetensors', 'tokenizer.json',
                                                        'tokenizer_config.json']


def test_safetensors_export_refuses_existing_files_and_directories(imported, tmp_path):
    out = tmp_path / 'lm.safetensors'
    out.write_bytes(b'keep me')
    args = [sys.executable, '-m', 'scalelab.export', '--workdir', str(imported)]
    refused = subprocess.run(args + ['--out', str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and out.read_bytes() == b'keep me'
    assert refused.stderr.strip() == f'error: --out {out}: is an existing file; pass --overwrite to replace it, or ' \
                                     'choose another --out'
    into_dir = subprocess.run(args + ['--out', str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert into_dir.returncode == 2 and into_dir.stderr.strip() == f'error: --out {tmp_path}: is a directory; give a file path'
    done = subprocess.run(args + ['--out', str(out), '--overwrite'], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert set(weights.load(out)[0]) == set(weights.load_params_flat(imported))
    assert [p.name for p in tmp_path.iterdir()] == ['lm.safetensors']


def test_importing_a_truncated_safetensors_file_is_one_line(hf_dir, tmp_path):
    import shutil
    broken = tmp_path / 'broken'
    shutil.copytree(hf_dir, broken)
    weights = broken / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    done = run_hf(['import', '--from', str(broken), '--workdir', str(tmp_path / 'w')])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f'error: {weights}: not a readable safetensors file (')
    assert not (tmp_path / 'w').exists()
