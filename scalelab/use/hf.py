"""GPT-2 to and from Hugging Face `transformers` directories, without pickle.

    python -m scalelab.hf import --from DIR --workdir W    # save_pretrained's files -> a scalelab workdir
    python -m scalelab.hf export --workdir W --out DIR     # -> GPT2LMHeadModel.from_pretrained(DIR)

import reads config.json, model.safetensors (or a sharded index of them) and the
tokenizer (tokenizer.json, or vocab.json + merges.txt), and writes a workdir
(config.json with the model section, checkpoints/0 with the parameters, tokenizer/)
that generate, evaluate, export and train.init_from use like any run's.
export writes config.json, model.safetensors, tokenizer.json and
tokenizer_config.json from a workdir whose model is GPT-2's architecture
(layernorm with biases, GELU, learned positions).

Weights (GPT-2's Conv1D maps x W + b, as scalelab's kernels do): wte -> embed.embedding,
wpe -> pos_embed, h.i.ln_1/ln_2 -> blocks.i.attn_norm/mlp_norm (weight -> scale),
h.i.attn.c_attn (d, 3d) -> q, k, v kernels (d, heads, head_dim), h.i.attn.c_proj ->
attn.o, h.i.mlp.c_fc/c_proj -> mlp.up/down, ln_f -> final_norm, lm_head (untied only)
-> head.kernel transposed. A pytorch_model.bin is never loaded: pickle can run code.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from scalelab.core import cli, weights
from scalelab.models.transformer import GPT2_OPTIONS
from scalelab.data import tokenizer as tokenizer_lib

# GPT-2 options scalelab implements, with the values it implements.
SUPPORTED = {
    'activation_function': ('gelu_new', 'gelu_pytorch_tanh'),  # both the tanh approximation
    'scale_attn_weights': (True,),
    'scale_attn_by_inverse_layer_idx': (False,),
    'add_cross_attention': (False,),
}


class HFError(ValueError):
    """A directory or workdir that cannot be converted: one line for the user."""


def model_config(hf: dict, where: str) -> dict:
    """scalelab's transformer section for a GPT-2 config.json."""
    if hf.get('model_type') != 'gpt2':
        raise HFError(f'{where}: model_type={hf.get("model_type")!r}; scalelab imports model_type=\'gpt2\'')
    for key, valid in SUPPORTED.items():
        if key in hf and hf[key] not in valid:
            raise HFError(f'{where}: {key}={hf[key]!r} is a GPT-2 option scalelab does not implement; '
                          f'valid: {", ".join(map(repr, valid))}')
    try:
        d = int(hf['n_embd'])
        return dict(name='transformer', vocab_size=int(hf['vocab_size']), d_model=d, n_layers=int(hf['n_layer']),
                    n_heads=int(hf['n_head']), head_dim=0, d_ff=int(hf.get('n_inner') or 4 * d),
                    max_len=int(hf['n_positions']), norm_eps=float(hf.get('layer_norm_epsilon', 1e-5)),
                    tie_embeddings=bool(hf.get('tie_word_embeddings', True)), dropout=0.0, scan_layers=False,
                    **GPT2_OPTIONS)
    except KeyError as e:
        raise HFError(f'{where}: no {e.args[0]!r}, which a GPT-2 config.json has') from None


def hf_config(model: dict, tok: tokenizer_lib.Tokenizer) -> dict:
    """A GPT-2 config.json for scalelab's transformer section."""
    for key, value in GPT2_OPTIONS.items():
        if model[key] != value:
            raise HFError(f'model.{key}={model[key]!r}: GPT-2 has {key}={value!r}, so this model has no '
                          'GPT-2 form to export')
    if model['d_model'] % model['n_heads']:
        raise HFError(f'model.n_heads={model["n_heads"]} does not divide model.d_model={model["d_model"]}')
    if model.get('n_kv_heads', 0) not in (0, model['n_heads']):
        raise HFError(f'model.n_kv_heads={model["n_kv_heads"]}: GPT-2 has one key/value head per query head '
                      f'({model["n_heads"]}), so this model has no GPT-2 form to export')
    eos = tok.eos_id
    return dict(model_type='gpt2', architectures=['GPT2LMHeadModel'], vocab_size=model['vocab_size'],
                n_positions=model['max_len'], n_embd=model['d_model'], n_layer=model['n_layers'],
                n_head=model['n_heads'], n_inner=model['d_ff'], activation_function='gelu_new',
                layer_norm_epsilon=model['norm_eps'], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
                tie_word_embeddings=model['tie_embeddings'], bos_token_id=eos, eos_token_id=eos, use_cache=True)


def to_scalelab(tensors: dict[str, np.ndarray], model: dict) -> dict[str, np.ndarray]:
    """HF GPT-2 names and layouts -> scalelab's (export.py's names)."""
    t = {k.removeprefix('transformer.'): v for k, v in tensors.items()}
    d, n = model['d_model'], model['n_heads']
    heads = lambda w: w.reshape(*w.shape[:-1], n, d // n)
    out = {'embed.embedding': t['wte.weight'], 'pos_embed': t['wpe.weight'],
           'final_norm.scale': t['ln_f.weight'], 'final_norm.bias': t['ln_f.bias']}
    for i in range(model['n_layers']):
        h, b = f'h.{i}.', f'blocks.{i}.'
        for ours, theirs in (('attn_norm', 'ln_1'), ('mlp_norm', 'ln_2')):
            out[b + ours + '.scale'], out[b + ours + '.bias'] = t[h + theirs + '.weight'], t[h + theirs + '.bias']
        for name, w, bias in zip('qkv', np.split(t[h + 'attn.c_attn.weight'], 3, axis=1),
                                 np.split(t[h + 'attn.c_attn.bias'], 3)):
            out[b + f'attn.{name}.kernel'], out[b + f'attn.{name}.bias'] = heads(w), heads(bias)
        out[b + 'attn.o.kernel'] = t[h + 'attn.c_proj.weight'].reshape(n, d // n, d)
        out[b + 'attn.o.bias'] = t[h + 'attn.c_proj.bias']
        for ours, theirs in (('up', 'c_fc'), ('down', 'c_proj')):
            out[b + f'mlp.{ours}.kernel'] = t[h + f'mlp.{theirs}.weight']
            out[b + f'mlp.{ours}.bias'] = t[h + f'mlp.{theirs}.bias']
    if not model['tie_embeddings']:
        out['head.kernel'] = t['lm_head.weight'].T
    return out


def to_hf(flat: dict[str, np.ndarray], model: dict) -> dict[str, np.ndarray]:
    """scalelab's names -> HF GPT-2's (the inverse of to_scalelab)."""
    if model.get('scan_layers'):  # stacked blocks: one array per layer, as looped layers have
        flat = {**{k: v for k, v in flat.items() if not k.startswith('blocks.')},
                **{f'blocks.{i}.{k[len("blocks."):]}': v[i] for k, v in flat.items() if k.startswith('blocks.')
                   for i in range(model['n_layers'])}}
    d = model['d_model']
    out = {'transformer.wte.weight': flat['embed.embedding'], 'transformer.wpe.weight': flat['pos_embed'],
           'transformer.ln_f.weight': flat['final_norm.scale'], 'transformer.ln_f.bias': flat['final_norm.bias']}
    for i in range(model['n_layers']):
        h, b = f'transformer.h.{i}.', f'blocks.{i}.'
        for ours, theirs in (('attn_norm', 'ln_1'), ('mlp_norm', 'ln_2')):
            out[h + theirs + '.weight'], out[h + theirs + '.bias'] = flat[b + ours + '.scale'], flat[b + ours + '.bias']
        out[h + 'attn.c_attn.weight'] = np.concatenate(
            [flat[b + f'attn.{x}.kernel'].reshape(d, d) for x in 'qkv'], axis=1)
        out[h + 'attn.c_attn.bias'] = np.concatenate([flat[b + f'attn.{x}.bias'].reshape(d) for x in 'qkv'])
        out[h + 'attn.c_proj.weight'] = flat[b + 'attn.o.kernel'].reshape(d, d)
        out[h + 'attn.c_proj.bias'] = flat[b + 'attn.o.bias']
        for ours, theirs in (('up', 'c_fc'), ('down', 'c_proj')):
            out[h + f'mlp.{theirs}.weight'] = flat[b + f'mlp.{ours}.kernel']
            out[h + f'mlp.{theirs}.bias'] = flat[b + f'mlp.{ours}.bias']
    if not model['tie_embeddings']:
        out['lm_head.weight'] = flat['head.kernel'].T
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def read_hf_config(directory: Path) -> dict:
    path = directory / 'config.json'
    if not path.is_file():
        raise HFError(f'{directory}: no config.json, so not a transformers save_pretrained directory')
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFError(f'{path}: corrupt JSON ({e}); copy the file again from its source') from None


def read_weights(directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    if (directory / 'model.safetensors').is_file():
        files = [directory / 'model.safetensors']
    elif (directory / 'model.safetensors.index.json').is_file():
        index = json.loads((directory / 'model.safetensors.index.json').read_text())
        files = [directory / f for f in sorted(set(index['weight_map'].values()))]
    elif any((directory / f).is_file() for f in ('pytorch_model.bin', 'pytorch_model.bin.index.json')):
        raise HFError(f'{directory}: has pytorch_model.bin but no model.safetensors; scalelab does not load '
                      'pickle files (unpickling can run code). Convert it where you trust the file: '
                      '`GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(OUT)` writes model.safetensors')
    else:
        raise HFError(f'{directory}: no model.safetensors')
    tensors = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except FileNotFoundError:
            raise HFError(f'{f}: missing (named by model.safetensors.index.json)') from None
        except Exception as e:  # safetensors raises its own SafetensorError for a truncated or corrupt file
            raise HFError(f'{f}: not a readable safetensors file ({e}); copy it again from its source') from None
    return tensors


def read_tokenizer(directory: Path) -> tokenizer_lib.Tokenizer:
    """tokenizer.json, or GPT-2's vocab.json + merges.txt (byte-level BPE)."""
    if (directory / 'tokenizer.json').is_file():
        return tokenizer_lib.load(str(directory / 'tokenizer.json'))
    if (directory / 'vocab.json').is_file() and (directory / 'merges.txt').is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        tok = Tokenizer(models.BPE.from_file(str(directory / 'vocab.json'), str(directory / 'merges.txt')))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([tokenizer_lib.BPE_SPECIAL])
        return tokenizer_lib.from_hf(tok, str(directory))
    raise HFError(f'{directory}: no tokenizer (tokenizer.json, or vocab.json and merges.txt)')


def import_dir(source: str | Path, workdir: str | Path) -> dict:
    """Write a scalelab workdir holding the GPT-2 in `source`; returns its model section."""
    from scalelab.core import checkpoint, files
    from scalelab.use import inference
    from scalelab.core import workdir as workdir_lib
    source, workdir = Path(source), Path(workdir)
    if (workdir / 'config.json').exists() or (workdir / 'checkpoints').exists():
        raise HFError(f'--workdir {workdir}: already holds a run or an import; choose a new directory')
    workdir_lib.check_output(workdir, '--workdir', False, directory=True)
    model = model_config(read_hf_config(source), str(source / 'config.json'))
    tok = read_tokenizer(source)
    if tok.vocab_size > model['vocab_size']:
        raise HFError(f'{source}: the tokenizer has {tok.vocab_size} ids but the model (config.json vocab_size) '
                      f'has {model["vocab_size"]}')
    _, target, _ = inference.abstract_params(inference.model_config({'model': model}), model['max_len'])
    tensors = read_weights(source)
    try:
        params = weights.arrange(to_scalelab(tensors, model), target)
    except KeyError as e:
        raise HFError(f'{source}: model.safetensors lacks {e.args[0]!r} for a {model["n_layers"]}-layer GPT-2') \
            from None
    except ValueError as e:
        raise HFError(f'{source}: {e}') from None
    with files.staged_dir(workdir) as staged:  # a killed import leaves no half workdir
        ckpt = checkpoint.Checkpointer(staged / 'checkpoints', every_steps=1, keep=1, async_save=False)
        ckpt.save(0, {'params': params}, {'step': 0, 'imported_from': str(source.absolute())}, force=True)
        ckpt.close()
        tok.save(staged / 'tokenizer')
        files.write_json(staged / 'config.json', {'model': model, 'imported_from': str(source.absolute())})
    return model


def export_dir(workdir: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Write `out` for GPT2LMHeadModel.from_pretrained; returns the HF config written.
    `out` is refused if it is a workdir, a file, or non-empty without `overwrite`, and is
    written whole or not at all (files.staged_dir)."""
    from scalelab.core import files
    from scalelab.use import inference
    from scalelab.core import workdir as workdir_lib
    workdir, out = Path(workdir), Path(out)
    workdir_lib.check_output(out, '--out', overwrite, directory=True)
    saved = inference.read_config(workdir)
    model = dict(inference.model_config(saved))
    tok = inference.workdir_tokenizer(workdir, saved)
    config = hf_config(model, tok)
    flat = to_hf(weights.load_params_flat(workdir), model)
    with files.staged_dir(out) as staged:
        weights.write_safetensors(flat, staged / 'model.safetensors', {'format': 'pt'})
        files.write_json(staged / 'config.json', config)
        tok.to_hf().save(str(staged / 'tokenizer.json'))
        special = ({} if tok.eos_id is None else
                   {k: tokenizer_lib.BPE_SPECIAL for k in ('bos_token', 'eos_token', 'unk_token')})
        files.write_json(staged / 'tokenizer_config.json', dict(
            tokenizer_class='GPT2Tokenizer', model_max_length=model['max_len'], add_prefix_space=False, **special))
    return config


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(prog='python -m scalelab.hf', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)
    imp = sub.add_parser('import', help='a transformers GPT-2 directory -> a scalelab workdir')
    imp.add_argument('--from', dest='source', required=True, help='the directory save_pretrained wrote')
    imp.add_argument('--workdir', required=True, help='the workdir to create')
    exp = sub.add_parser('export', help='a scalelab workdir -> a transformers GPT-2 directory')
    exp.add_argument('--workdir', required=True)
    exp.add_argument('--out', required=True, help='a new or empty directory (never a run\'s workdir)')
    exp.add_argument('--overwrite', action='store_true', help='replace a non-empty --out, once the export is complete')
    args = p.parse_args(argv)
    from scalelab.use import inference
    from scalelab.core import runtime
    from scalelab.core.errors import ConfigError, UsageError
    runtime.configure()
    try:
        if args.command == 'import':
            model = import_dir(args.source, args.workdir)
            print(f'imported a GPT-2 of {model["n_layers"]} layers, d_model {model["d_model"]}, '
                  f'{model["vocab_size"]} ids from {args.source} into {args.workdir}')
        else:
            config = export_dir(args.workdir, args.out, args.overwrite)
            print(f'wrote a GPT-2 of {config["n_layer"]} layers, n_embd {config["n_embd"]} to {args.out}; '
                  f'load it with transformers.GPT2LMHeadModel.from_pretrained({str(args.out)!r})')
    except (HFError, inference.WorkdirError, tokenizer_lib.TokenizerError, ConfigError, UsageError,
            FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0
