"""uatools: the Python side of the toolkit (exports, checks, benchmarks, the seed's reference).

The executables under scripts/ are thin launchers into these modules; the helpers they
share (hashing, binaries, caches, the seed's loop, the parity rule) live here once.
"""
import os

# The repository root: python/uatools/__init__.py -> python/ -> the root.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
