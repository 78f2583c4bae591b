"""What the command-line entry points share: flag parsing with readable errors, quiet logs."""
from __future__ import annotations

import sys

from absl import flags, logging


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with config_flags' errors for bad overrides (an unknown key,
    a value of the wrong type) shown as one line and exit code 2 instead of a traceback."""
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


def quiet_logging() -> None:
    """WARNING unless --verbosity was given: orbax logs every save at INFO."""
    if not flags.FLAGS['verbosity'].present:
        logging.set_verbosity(logging.WARNING)
