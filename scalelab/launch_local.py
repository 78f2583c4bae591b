"""`python -m scalelab.launch_local`: see scalelab/training/launch_local.py."""
import sys

from scalelab.training.launch_local import main

if __name__ == '__main__':
    sys.exit(main())
