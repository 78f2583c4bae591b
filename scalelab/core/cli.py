"""What the command-line entry points share: one flag style, readable errors, quiet logs.

Every scalelab command spells its flags with dashes (--cpu-devices,
--max-new-tokens); each also answers to the underscore spelling
(--cpu_devices), which earlier versions of the absl commands used.
Config overrides keep their keys' names: --config.train.log_every=5.
"""
from __future__ import annotations

import argparse
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


def underscore_aliases() -> None:
    """For every absl flag defined with dashes, the same flag spelled with underscores."""
    for name in list(flags.FLAGS):
        if '-' in name and name.replace('-', '_') not in flags.FLAGS:
            flags.DEFINE_alias(name.replace('-', '_'), name)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that takes --max_new_tokens for --max-new-tokens (the absl commands' old spelling)
    and reports a bad argument as one line, `error: ...`, exit 2 (argparse prints its usage too)."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args([_dashed(arg) for arg in args], namespace)

    def error(self, message: str):
        print(f'error: {message} (--help for usage)', file=sys.stderr)
        sys.exit(2)


def _dashed(arg: str) -> str:
    if not arg.startswith('--') or arg == '--':
        return arg
    name, eq, value = arg.partition('=')
    return name.replace('_', '-') + eq + value


def _last_line(text: str) -> str:
    return [line.strip() for line in text.splitlines() if line.strip()][-1]


def _clean(error: Exception) -> str:
    return str(error).strip('\'"').replace('\\n', ' ').replace('\\', '')


def quiet_logging() -> None:
    """WARNING unless --verbosity was given: orbax logs every save at INFO."""
    if not flags.FLAGS['verbosity'].present:
        logging.set_verbosity(logging.WARNING)
