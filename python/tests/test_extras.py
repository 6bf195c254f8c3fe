"""The light install: the reader with numpy, pyarrow and pandas alone; every other module either
imports or fails with one line saying what to install (uatools.extras); [export] as pyproject.toml
declares it."""
import json
import os
import subprocess
import sys

import tomllib

from uatools import REPO
from uatools.extras import EXPORT, MissingDependency, missing, need

# What the plain install does not have: the [export] extra, scipy, and datasets (tests only).
HEAVY = sorted(set(EXPORT) | {"scipy", "datasets"})

# Runs in a fresh interpreter in which every HEAVY package fails to import, as on a plain install.
PROBE = r"""
import importlib, json, pkgutil, sys
HEAVY = set(sys.argv[1].split(","))
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
import uatools
from uatools.reader import load_cache
c = load_cache(sys.argv[2])
layer = c.layer(1, "mean")
out = {"rows": len(c.statements), "layer": list(layer.shape), "failed": {}}
for m in pkgutil.walk_packages(uatools.__path__, "uatools."):
    try:
        importlib.import_module(m.name)
    except Exception as e:
        out["failed"][m.name] = [type(e).__name__, str(e)]
out["loaded"] = sorted(n for n in HEAVY if n in sys.modules)
print(json.dumps(out))
"""


def test_the_reader_needs_no_heavy_package_and_the_rest_says_what_to_install():
    cache = os.path.join(REPO, "tests", "golden", "demo-cache", "tiny-a")
    proc = subprocess.run([sys.executable, "-c", PROBE, ",".join(HEAVY), cache], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.path.join(REPO, "python")}, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["rows"] > 0 and out["layer"][0] == out["rows"]
    assert out["loaded"] == []
    # The modules that need a heavy package say so in one line naming what to install.
    assert "uatools.seed.reference" in out["failed"] and "uatools.perturb_onnx" in out["failed"]
    for name, (kind, message) in out["failed"].items():
        assert kind == "MissingDependency", (name, kind, message)
        assert "\n" not in message and "pip install" in message, (name, message)
    assert "uatools.reader" not in out["failed"] and "uatools.extras" not in out["failed"]


def test_export_is_the_extra_the_wheel_declares():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["optional-dependencies"]["export"]
    assert tuple(declared) == EXPORT


def test_need_names_the_tool_the_package_and_the_install():
    assert need("json", "t").dumps([1]) == "[1]"
    try:
        need("ua_no_such_module.sub", "the tool x", "pip install y")
    except MissingDependency as e:
        assert str(e) == "the tool x needs ua_no_such_module, which is not installed: pip install y"
    else:
        raise AssertionError("need() imported a module that does not exist")
    assert missing(["json", "ua_no_such_module"]) == ["ua_no_such_module"]


def test_ua_export_says_in_one_line_what_is_missing(monkeypatch, capsys):
    from uatools import extras

    monkeypatch.setattr(extras, "EXPORT", ("json", "ua_no_such_module"))
    assert extras.ua_export() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ua-export: error: ua_no_such_module not installed")
    assert "pip install 'ua-scaling[export]'" in err
