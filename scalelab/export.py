"""`python -m scalelab.export`: see scalelab/use/export.py."""
import sys

from scalelab.use.export import main

if __name__ == '__main__':
    sys.exit(main())
