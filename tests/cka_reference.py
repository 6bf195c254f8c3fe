#!/usr/bin/env python3
"""tests/cka_reference.py: linear CKA from the features with numpy, the reference of
tests/e2e/cka_exact.rs. The code: python/uatools/cka.py (usage: --help)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, "python"))

try:
    from uatools.cka import main
except ImportError as e:  # the Rust test turns this into a failure with advice
    sys.stderr.write(f"cka_reference.py needs numpy and pyarrow: {e}. Install them: python3 -m pip install numpy pyarrow\n")
    sys.exit(3)

sys.exit(main())
