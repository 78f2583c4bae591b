"""`python -m scalelab.generate`: see scalelab/use/generate.py."""
import sys

from scalelab.use.generate import main

if __name__ == '__main__':
    sys.exit(main())
