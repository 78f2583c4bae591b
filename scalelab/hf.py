"""`python -m scalelab.hf`: see scalelab/use/hf.py."""
import sys

from scalelab.use.hf import main

if __name__ == '__main__':
    sys.exit(main())
