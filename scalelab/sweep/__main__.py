"""`python -m scalelab.sweep`: see scalelab/sweep/cli.py."""
from absl import app

from scalelab.core import cli
from scalelab.sweep.cli import main

if __name__ == '__main__':
    app.run(main, flags_parser=cli.parse_flags)
