#!/usr/bin/env python3
"""scripts/parity.py: the one parity rule (python/uatools/parity.py); `--rule` prints its constants
as JSON (tests/e2e/parity.rs compares them with extract/src/parity.rs). Needs numpy."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, "python"))

from uatools.parity import main

sys.exit(main())
