import sys

from segtrain.cli import main

sys.exit(main())
