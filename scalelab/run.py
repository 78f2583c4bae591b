"""CLI: train one config.

    python -m scalelab.run --config experiments/lm_stdlib.py --workdir runs/lm \
        [--config.train.steps=500 ...] [--cpu-devices=8]

Flags are spelled with dashes, as in every scalelab command; the underscore
spellings (--cpu_devices, --num_processes, ...) still work.
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from scalelab.core import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (path.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (created; resumed if it holds a run).')
_CPU_DEVICES = flags.DEFINE_integer('cpu-devices', None,
                                    'Virtual CPU devices to expose (for meshes on a CPU-only machine).', lower_bound=1)
_COORDINATOR = flags.DEFINE_string('coordinator', None, 'host:port of process 0, for a multi-process run '
                                   '(else SCALELAB_COORDINATOR, else auto-detected on SLURM and TPU pods).')
_NUM_PROCESSES = flags.DEFINE_integer('num-processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process-id', None, 'This process\'s index in a multi-process run.')
_HEARTBEAT = flags.DEFINE_integer('heartbeat-timeout', 100, 'Seconds without a peer\'s heartbeat before '
                                  'the others abort.')
_PROFILE = flags.DEFINE_string('profile-steps', None, 'a:b writes a JAX profiler trace of steps a..b-1 '
                               'to <workdir>/profile (view with TensorBoard or Perfetto).')
flags.mark_flags_as_required(['config', 'workdir'])
cli.underscore_aliases()


def profile_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        a, b = (int(part) for part in text.split(':'))
    except ValueError:
        raise app.UsageError(f'--profile-steps={text!r}: expected a:b with integers, e.g. 10:15') from None
    if not 1 <= a < b:
        raise app.UsageError(f'--profile-steps={text!r}: need 1 <= a < b (the trace starts after step a)')
    return a, b


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    profile = profile_range(_PROFILE.value)
    cli.quiet_logging()
    from scalelab.core import runtime  # jax is configured before its first use
    runtime.configure(cpu_devices=_CPU_DEVICES.value)
    from scalelab.core import distributed
    from scalelab.training import loop
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                           heartbeat_s=_HEARTBEAT.value)
    import jax

    from scalelab.core import workdir
    from scalelab.core.errors import ConfigError, EXIT_DIVERGED

    def record_exit(code: int, error: str) -> None:  # for a sweep's table and a cluster job's user
        if jax.process_index() == 0:
            workdir.record_exit(_WORKDIR.value, code, error)

    try:
        summary = loop.run(_CONFIG.value, _WORKDIR.value, profile_steps=profile)
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        record_exit(2, str(e))
        return 2
    except Exception as e:
        record_exit(1, f'{type(e).__name__}: {e}')
        raise
    return EXIT_DIVERGED if summary['status'] == 'diverged' else 0


if __name__ == '__main__':
    from scalelab.core import stop
    stop.catch_signals()  # from here on: loading the config file imports jax, which takes seconds
    app.run(main, flags_parser=cli.parse_flags)
