"""CLI: train one config.

    python -m scalelab.run --config experiments/lm_stdlib.py --workdir runs/lm \
        [--config.train.steps=500 ...] [--cpu_devices=8]
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (path.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (created; resumed if it holds a run).')
_CPU_DEVICES = flags.DEFINE_integer('cpu_devices', None,
                                    'Virtual CPU devices to expose (for meshes on a CPU-only machine).')
flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with config_flags' errors for bad overrides (an unknown key,
    a value of the wrong type) shown as one line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = f'{e}\nPass --help for usage.'
    except (AttributeError, KeyError) as e:
        message = 'unknown key in a --config override: ' + _clean(e)
    except (TypeError, ValueError) as e:
        message = 'bad value in a --config override: ' + _clean(e)
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def _clean(error: Exception) -> str:
    return str(error).strip('\'"').replace('\\n', ' ').replace('\\', '')


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO
        logging.set_verbosity(logging.WARNING)
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
    app.run(main, flags_parser=parse_flags)
