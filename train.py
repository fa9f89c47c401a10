#!/usr/bin/env python
"""Train a segmentation model: ``python train.py --config configs/quickstart.yaml [--set k=v] [--resume]``."""

import sys

from segtrain.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
