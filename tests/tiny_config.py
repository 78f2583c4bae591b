"""The tests' tiny LM as a config file, for runs through the CLI."""
from tests.helpers import tiny_lm


def get_config():
    return tiny_lm()
