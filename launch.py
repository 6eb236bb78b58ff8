#!/usr/bin/env python
"""Entry point: ``python launch.py --config methods/dreamface.yaml [key=value ...]``."""

import sys

from headgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
