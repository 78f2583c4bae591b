"""`python -m scalelab.evaluate`: see scalelab/use/evaluate.py."""
import sys

from scalelab.use.evaluate import main

if __name__ == '__main__':
    sys.exit(main())
