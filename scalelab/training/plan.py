"""A run's plan: its config resolved once, with everything derived from it, frozen.

Training, sweeps (each point carries its plan), inference, translation, muP's coordinate
check and the benchmarks all take a plan; the data's spec is computed once, in `make`.
A workdir's saved sections are read back through one place (`saved_model`, `saved_data`).
"""
from __future__ import annotations

import dataclasses

from ml_collections import ConfigDict

from scalelab import models
from scalelab.core.tasks import DataSpec
from scalelab.models import base
from scalelab.science import flops
from scalelab.training import config
from scalelab import data as data_lib


@dataclasses.dataclass(frozen=True)
class Plan:
    cfg: ConfigDict                 # resolved and locked: defaults filled, derived values computed
    spec: DataSpec                  # what the model accepts and produces, from the data section (once)
    family: type[base.Family]       # the model family the config names
    param_counts: dict              # hand counts: total, embedding, non_embedding, with_head (N of C = 6ND)
    tokens_per_step: int            # sequence positions (or examples) a step trains on
    flops_per_step: float           # counted FLOPs of one training step (attention included): MFU's numerator
    scaling_flops_per_step: float   # C = 6 N D of one step (flops.FLOP_CONVENTION)

    @property
    def steps(self) -> int:
        return self.cfg.train.steps

    @property
    def scaling_flops(self) -> float:
        """The run's whole compute C = 6 N D."""
        return self.steps * self.scaling_flops_per_step


def make(cfg: ConfigDict, num_devices: int | None, spec: DataSpec | None = None,
         platform: str | None = None) -> Plan:
    """The plan of `cfg` on `num_devices` devices of `platform` (None: those checks left out).
    `spec`, when the caller has already computed it from this data section, is not computed again."""
    resolved, spec = config.resolve_with_spec(cfg, num_devices, spec, platform)
    counts = flops.param_counts(resolved.model, spec)
    counts['with_head'] = flops.scaling_params(counts, resolved.model)
    batch = resolved.train.global_batch
    return Plan(cfg=resolved, spec=spec, family=models.family(resolved.model.name), param_counts=counts,
                tokens_per_step=batch * flops.tokens_per_example(spec),
                flops_per_step=flops.train_flops_per_step(resolved.model, spec, batch),
                scaling_flops_per_step=6.0 * counts['with_head'] * batch * flops.tokens_per_example(spec))


def saved_model(saved: dict) -> ConfigDict:
    """A workdir's model section (config.json's, of a run or an import) with its family's
    defaults filled and derived values resolved: what inference and translation rebuild."""
    family = models.family(saved.get('model', {}).get('name', 'transformer'))
    cfg = family.default_config()
    cfg.update(saved.get('model', {}))
    family.resolve(cfg)
    return cfg


def saved_data(saved: dict, source: str) -> ConfigDict:
    """A workdir's data section, the source's defaults filled."""
    cfg = data_lib.default_config(source)
    cfg.update(saved.get('data', {}))
    return cfg
