"""Where a run's records go: metrics.jsonl, TensorBoard event files, and W&B if asked.

metrics.jsonl is the source of truth (sweeps, plots and summaries read it);
the others show the same numbers where researchers look. A record is one
dict with its 'step'; each number in it becomes a scalar under `tag(key)`:
'loss' -> 'train/loss', 'eval_loss' -> 'eval/loss', and a key that already
names its section ('grad_norm/blocks.0.attn') keeps it. Only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import socket
import time
from pathlib import Path

from scalelab.core.errors import ConfigError
from scalelab.training import metrics

TB_DIR = 'tb'
WANDB_MODES = ('auto', 'online', 'offline')
WANDB_ID_FILE = 'wandb_id'  # one W&B run per workdir, continued on resume


def tag(key: str) -> str:
    if '/' in key:
        return key
    if key.startswith('eval_'):
        return 'eval/' + key.removeprefix('eval_')
    return 'train/' + key


def scalars(record: dict) -> dict[str, float]:
    """{tag: value} for the record's finite numbers other than its step."""
    return {tag(key): float(value) for key, value in record.items()
            if key != 'step' and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


class TensorBoard:
    """Event files under workdir/tb (tensorboardX). On resume, TensorBoard drops
    what the killed session logged past the checkpoint (purge_step), as
    metrics.jsonl does."""

    def __init__(self, directory: Path, resume_step: int, config: dict):
        from tensorboardX import SummaryWriter
        # A session's own file, named in time order even when sessions start within one second.
        self.writer = SummaryWriter(str(directory), purge_step=resume_step + 1 if resume_step else None,
                                    flush_secs=10, filename_suffix=f'.{time.time_ns()}')
        if not resume_step:
            self.writer.add_text('config', '```\n' + json.dumps(config, indent=2, sort_keys=True) + '\n```', 0)

    def write(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():  # a tag holds no ':' (downstream/hellaswag:rc_0shot/acc)
            self.writer.add_scalar(name.replace(':', '_'), value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A W&B run that lives with the workdir (its id saved there, resumed with it)."""

    def __init__(self, workdir: Path, project: str, mode: str, config: dict):
        try:
            import wandb
        except ImportError:
            raise ConfigError([f'log.wandb={project!r}: needs the wandb package (pip install wandb), '
                               "or set log.wandb='' to log to metrics.jsonl and TensorBoard only"]) from None
        id_file = workdir / WANDB_ID_FILE
        if not id_file.exists():
            id_file.write_text(secrets.token_hex(8) + '\n')
        self.run = wandb.init(project=project, id=id_file.read_text().strip(), resume='allow', name=workdir.name,
                              dir=str(workdir), config=config, mode=wandb_mode(mode))

    def write(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def flush(self) -> None:
        pass  # wandb sends from its own process

    def close(self) -> None:
        self.run.finish()


def wandb_mode(mode: str) -> str:
    """'auto': online when W&B's API host answers within 2 s, else offline (sync later
    with `wandb sync <workdir>/wandb`); WANDB_MODE in the environment wins."""
    if os.environ.get('WANDB_MODE'):
        return os.environ['WANDB_MODE']
    if mode != 'auto':
        return mode
    try:
        socket.create_connection(('api.wandb.ai', 443), timeout=2).close()
        return 'online'
    except OSError:
        return 'offline'


class Writers:
    """metrics.jsonl plus the writers `log` asks for, behind one `write(record)`."""

    def __init__(self, workdir: Path, log_cfg, config: dict, *, enabled: bool, resume_step: int, warn=None):
        self.jsonl = metrics.MetricsLog(workdir / 'metrics.jsonl', enabled=enabled, resume_step=resume_step,
                                        warn=warn)
        self.others = []
        if enabled and log_cfg.tensorboard:
            self.others.append(TensorBoard(workdir / TB_DIR, resume_step, config))
        if enabled and log_cfg.wandb:
            self.others.append(WandB(workdir, log_cfg.wandb, log_cfg.wandb_mode, config))

    def write(self, record: dict) -> None:
        self.jsonl.write(record)
        values = scalars(record)
        for writer in self.others:
            writer.write(record['step'], values)

    def records(self) -> list[dict]:
        return self.jsonl.records()

    def flush(self) -> None:
        for writer in self.others:
            writer.flush()

    def close(self) -> None:
        for writer in self.others:
            writer.close()
