"""`python -m scalelab.downstream`: see scalelab/use/downstream.py."""
import sys

from scalelab.use.downstream import main

if __name__ == '__main__':
    sys.exit(main())
