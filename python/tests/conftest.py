"""Shared helpers of the Python tests: the repository's Python files."""
import os
import subprocess

import pytest

from uatools import REPO


def python_files() -> list:
    """Every tracked (or new, not ignored) Python file: *.py, and executables whose shebang names python."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             check=True, capture_output=True, text=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the Python folders
        out = [os.path.relpath(os.path.join(d, f), REPO) for top in ("python", "scripts", "tests")
               for d, _, fs in os.walk(os.path.join(REPO, top)) for f in fs]
    found = []
    for rel in sorted(set(filter(None, out))):
        path = os.path.join(REPO, rel)
        if not os.path.isfile(path):
            continue  # deleted in the working tree
        if rel.endswith(".py"):
            found.append(rel)
            continue
        with open(path, "rb") as f:
            first = f.readline()
        if first.startswith(b"#!") and b"python" in first:
            found.append(rel)
    return found


@pytest.fixture(scope="session")
def py_files() -> list:
    files = python_files()
    assert files, "no Python files found"
    return files
