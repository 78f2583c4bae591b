"""CLI: train one config.

    python -m scalelab.run --config experiments/lm_stdlib.py --workdir runs/lm \
        [--config.train.steps=500 ...] [--cpu_devices=8]
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from scalelab import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (path.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (created; resumed if it holds a run).')
_CPU_DEVICES = flags.DEFINE_integer('cpu_devices', None,
                                    'Virtual CPU devices to expose (for meshes on a CPU-only machine).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    cli.quiet_logging()
    from scalelab import runtime  # jax is configured before its first use
    runtime.configure(cpu_devices=_CPU_DEVICES.value)
    from scalelab import loop
    from scalelab.errors import ConfigError
    try:
        loop.run(_CONFIG.value, _WORKDIR.value)
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    app.run(main, flags_parser=cli.parse_flags)
