#!/usr/bin/env python3
"""tests/seed_analysis.py: the seed notebook's analysis code on an extract cache, the reference
of tests/e2e/seed_exact.rs. The code: python/uatools/seed/cache_analysis.py (usage: --help)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, "python"))

try:
    from uatools.seed.cache_analysis import main
except ImportError as e:  # the Rust test turns this into a failure with advice
    sys.stderr.write(f"seed_analysis.py needs numpy, scipy and pyarrow: {e}. "
                     "Install them: python3 -m pip install numpy scipy pyarrow\n")
    sys.exit(3)

sys.exit(main())
