"""`python -m scalelab.translate`: see scalelab/use/translate.py."""
import sys

from scalelab.use.translate import main

if __name__ == '__main__':
    sys.exit(main())
