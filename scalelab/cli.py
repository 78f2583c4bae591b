"""What the command-line entry points share: flag parsing with readable errors, quiet logs."""
from __future__ import annotations

import sys

from absl import flags, logging


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with config_flags' errors for bad overrides (an unknown key,
    a value of the wrong type) shown as one line and exit code 2 instead of a traceback."""
    try:
        rest = flags.FLAGS(argv)
        if 'config' in flags.FLAGS and flags.FLAGS['config'].value is not None:
            hasattr(flags.FLAGS['config'].value, 'keys')  # config_flags defers a load failure to first use
        return rest
    except flags.Error as e:
        text = str(e)
        if 'Error whilst parsing config file' in text:  # config_flags embeds the config's traceback
            message = f'{text.splitlines()[0].removeprefix("flag ").split(": Error whilst")[0]}: {_last_line(text)}'
        else:
            message = f'{text}\nPass --help for usage.'
    except OSError as e:  # config_flags: a config file that cannot be read
        message = f'--config: cannot load the config file: {_last_line(str(e))}'
    except (AttributeError, KeyError) as e:
        message = 'unknown key in a --config override: ' + _clean(e)
    except (TypeError, ValueError) as e:
        message = 'bad value in a --config override: ' + _clean(e)
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def _last_line(text: str) -> str:
    return [line.strip() for line in text.splitlines() if line.strip()][-1]


def _clean(error: Exception) -> str:
    return str(error).strip('\'"').replace('\\n', ' ').replace('\\', '')


def quiet_logging() -> None:
    """WARNING unless --verbosity was given: orbax logs every save at INFO."""
    if not flags.FLAGS['verbosity'].present:
        logging.set_verbosity(logging.WARNING)
