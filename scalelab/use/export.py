"""Parameters to and from safetensors files: how a model leaves and enters scalelab, without pickle.

    python -m scalelab.export --workdir runs/lm --out lm.safetensors

Name mapping: a parameter's path in the model, its parts joined by '.'. For
the Transformer (shapes with d = d_model, N = n_heads, K = n_kv_heads, H = head_dim,
F = d_ff, V = vocab_size, L = n_layers):

    embed.embedding              (V, d)      token embedding; also the output layer when tied
    pos_embed                    (max_len, d) learned positions only
    blocks.{i}.attn_norm.scale   (d,)        (.bias with layernorm and use_bias)
    blocks.{i}.attn.q.kernel     (d, N, H)   (.bias (N, H) with use_bias)
    blocks.{i}.attn.{k,v}.kernel (d, K, H)   K = N unless grouped-query attention
    blocks.{i}.attn.{q,k}_norm.scale (H,)    qk_norm only
    blocks.{i}.attn.o.kernel     (N, H, d)
    blocks.{i}.mlp_norm.scale    (d,)
    blocks.{i}.mlp.{up,gate}.kernel (d, F)   gate only with swiglu
    blocks.{i}.mlp.down.kernel   (F, d)
    final_norm.scale             (d,)
    head.kernel                  (d, V)      untied output layer only

With model.scan_layers the blocks are stacked: blocks.attn.q.kernel is
(L, d, N, H). A kernel maps its leading axes to its trailing ones (y = x W).
The file's metadata holds the model config as JSON under 'scalelab.model'.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from scalelab.core import cli, weights

def main(argv: list[str] | None = None) -> int:
    import argparse
    p = cli.ArgumentParser(prog='python -m scalelab.export', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', required=True, help='a run directory (its latest checkpoint is exported)')
    p.add_argument('--out', required=True, help='the .safetensors file to write (a new file)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --out, once the export is complete')
    args = p.parse_args(argv)
    from scalelab.core import workdir as workdir_lib
    from scalelab.core.errors import ConfigError, UsageError
    try:
        workdir_lib.check_output(Path(args.out), '--out', args.overwrite, directory=False)
        model_cfg = workdir_lib.read_json(Path(args.workdir) / 'config.json', 'not a run\'s workdir?')['model']
        flat = weights.load_params_flat(args.workdir)
    except (ConfigError, UsageError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    weights.write_safetensors(flat, args.out, {weights.METADATA_KEY: json.dumps(model_cfg)})
    print(f'wrote {len(flat)} arrays ({sum(v.size for v in flat.values()):,} parameters) to {args.out}')
    return 0
