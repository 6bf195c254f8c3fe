"""The shape of the Python itself: no function over 80 lines, ruff clean, launchers thin."""
import ast
import os
import shutil
import subprocess
import sys

import pytest

from uatools import REPO

MAX_FUNCTION_LINES = 80


def long_functions(source: str, max_lines: int = MAX_FUNCTION_LINES) -> list:
    """(name, first line, length) of every function longer than max_lines, `def` to its last line."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > max_lines:
                out.append((node.name, node.lineno, length))
    return out


def test_long_functions_is_measured_def_to_last_line():
    def source(name, n_body):
        return f"def {name}():\n" + "\n".join(f"    x = {i}" for i in range(n_body)) + "\n"
    assert long_functions(source("ok", 79)) == []  # 80 lines: the limit itself
    assert long_functions(source("f", 80)) == [("f", 1, 81)]
    nested = "class C:\n    def m(self):\n" + "\n".join(f"        y = {i}" for i in range(85)) + "\n"
    assert long_functions(nested) == [("m", 2, 86)]


def test_no_function_over_80_lines(py_files):
    bad = []
    for rel in py_files:
        with open(os.path.join(REPO, rel), encoding="utf-8") as f:
            bad += [f"{rel}:{line} {name}: {n} lines" for name, line, n in long_functions(f.read())]
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(bad)


def ruff_command():
    if shutil.which("ruff"):
        return [shutil.which("ruff")]
    try:
        import ruff  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "ruff"]


def test_ruff_clean_on_every_python_file(py_files):
    cmd = ruff_command()
    if cmd is None:
        pytest.skip("ruff is not installed (scripts/test installs it into .venv)")
    # The files named one by one: the launchers without .py are checked whatever the config includes.
    p = subprocess.run(cmd + ["check", "--force-exclude", "--no-cache", *py_files], cwd=REPO,
                       check=False, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def sys_path_edits(source: str) -> int:
    """Calls of sys.path.insert / sys.path.append in a module."""
    return sum(1 for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr in ("insert", "append") and ast.unparse(node.func.value) == "sys.path")


def test_only_launchers_touch_sys_path(py_files):
    """Scripts reach each other through the package, never by putting each other on sys.path:
    only a launcher (scripts/, tests/*.py) puts python/ on it, once."""
    assert sys_path_edits("import sys\nsys.path.insert(0, 'x')\nsys.path.append('y')\n") == 2
    for rel in py_files:
        with open(os.path.join(REPO, rel), encoding="utf-8") as f:
            n = sys_path_edits(f.read())
        if rel.startswith("python/"):
            assert n == 0, f"{rel} edits sys.path"
        else:
            assert n <= 1, f"{rel} edits sys.path {n} times"


def python_launchers() -> list:
    """Every Python script of scripts/ (its shebang names python): each is a launcher into uatools."""
    found = []
    for name in sorted(os.listdir(os.path.join(REPO, "scripts"))):
        with open(os.path.join(REPO, "scripts", name), "rb") as f:
            first = f.readline()
        if first.startswith(b"#!") and b"python" in first:
            found.append(name)
    return found


LAUNCHERS = python_launchers()


def test_the_launchers_are_found_and_docs_testing_lists_each():
    assert {"export", "pythia-suite", "parity.py"} <= set(LAUNCHERS)
    with open(os.path.join(REPO, "docs", "testing.md"), encoding="utf-8") as f:
        doc = f.read()
    missing = [name for name in LAUNCHERS if f"`{name}`" not in doc]
    assert not missing, f"docs/testing.md does not list the launchers {missing} whose --help is tested"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_help(name):
    """Each launcher reaches its module: --help works without torch being imported."""
    p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", name), "--help"], check=False,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: "), p.stdout[:200]
