"""`python -m scalelab.plot`: see scalelab/science/plot.py."""
import sys

from scalelab.training.plot import main

if __name__ == '__main__':
    sys.exit(main())
