"""A language model from a workdir (trained here, or imported from Hugging Face),
for generation, scoring and export: its model config, parameters (sharded
tensor-parallel over the devices) and tokenizer. Only config.json's model
section, the latest checkpoint's parameters and tokenizer/ are read.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import ml_collections
from flax import nnx

from scalelab import models
from scalelab.core import parallel, weights
from scalelab.core.tasks import DataSpec
from scalelab.training import plan
from scalelab.core import workdir as workdir_lib
from scalelab.data import tokenizer as tokenizer_lib


class WorkdirError(ValueError):
    """A workdir that cannot be read as asked: one line for the user."""


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    model_cfg: ml_collections.FrozenConfigDict
    graphdef: nnx.GraphDef
    params: dict
    tokenizer: tokenizer_lib.Tokenizer
    context: int  # positions a window may hold: the training sequence length, else the position table
    mesh: jax.sharding.Mesh


def read_config(workdir: Path) -> dict:
    path = Path(workdir) / 'config.json'
    if not path.is_file():
        raise WorkdirError(f'{workdir}: no config.json, so not a scalelab run directory')
    return workdir_lib.read_json(path, 'restore it from the run\'s source, or retrain')


def model_config(saved: dict) -> ml_collections.ConfigDict:
    """The transformer section of a saved config, defaults filled."""
    name = saved.get('model', {}).get('name', 'transformer')
    if name != 'transformer':
        raise WorkdirError(f"model.name={name!r}: a language-model transformer is needed")
    return plan.saved_model(saved)


def workdir_tokenizer(workdir: Path, saved: dict) -> tokenizer_lib.Tokenizer:
    """The tokenizer saved with the run; runs from before tokenizers travelled were byte-level."""
    if (Path(workdir) / 'tokenizer').is_dir():
        return tokenizer_lib.load(str(Path(workdir) / 'tokenizer'))
    if saved.get('data', {}).get('name') == 'text':
        return tokenizer_lib.byte_level()
    raise WorkdirError(f'{workdir}: no tokenizer/ directory')


def abstract_params(model_cfg, context: int):
    """(graphdef, params as a pure dict of ShapeDtypeStructs, their abstract State)."""
    spec = DataSpec('lm', (context,), model_cfg.vocab_size)
    graphdef, params, _ = models.split_abstract(model_cfg, spec)
    return graphdef, nnx.to_pure_dict(params), params


TENSOR_PARALLEL = {'data': 1, 'fsdp': 1, 'tensor': -1}  # one sequence at a time: split the weights
DATA_PARALLEL = {'data': -1, 'fsdp': 1, 'tensor': 1}    # many rows at a time: split the batch


def load(workdir: str | Path, mesh_cfg: dict = TENSOR_PARALLEL) -> LanguageModel:
    workdir = Path(workdir)
    saved = read_config(workdir)
    cfg = model_config(saved)
    context = saved.get('data', {}).get('seq_len') or cfg.max_len
    graphdef, target, abstract = abstract_params(cfg, context)
    try:
        params = weights.arrange(weights.load_params_flat(workdir), target)
    except (FileNotFoundError, ValueError) as e:
        raise WorkdirError(f'{workdir}: {e}') from None
    mesh = parallel.make_mesh(parallel.mesh_shape(mesh_cfg, jax.device_count()))
    params = jax.device_put(params, parallel.variable_shardings(abstract, mesh))
    return LanguageModel(ml_collections.FrozenConfigDict(cfg), graphdef, params,
                         workdir_tokenizer(workdir, saved), int(context), mesh)
