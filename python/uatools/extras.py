"""What the tools beyond the reader need, and the one line they fail with where it is missing.

The wheel's plain install gives the reader (uatools.reader: numpy, pyarrow, pandas); the
model-making tooling needs the extra [export] (EXPORT, the same list as pyproject.toml's), and the
seed's statistics need scipy. A module that needs such a package imports it through `need`, so
that importing it without the package raises one line saying what to install, not a traceback
through the package.
"""
import importlib
import sys

# pyproject.toml's [project.optional-dependencies] export (python/tests/test_extras.py keeps them equal).
EXPORT = ("torch", "transformers", "onnxscript", "onnx", "safetensors", "tokenizers")
EXPORT_HINT = "pip install 'ua-scaling[export]'"


class MissingDependency(ImportError):
    """A package that a tool of uatools needs is not installed (the message is one line)."""


def need(module: str, by: str, hint: str = EXPORT_HINT):
    """`import module` for the tool `by`, or MissingDependency naming it and what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top, lacking = module.split(".")[0], getattr(e, "name", None) or module
        why = "which is not installed" if lacking.split(".")[0] == top else f"and {lacking} is not installed"
        raise MissingDependency(f"{by} needs {top}, {why}: {hint}") from None


def missing(modules) -> list:
    """The top-level modules among `modules` that cannot be imported."""
    out = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            out.append(m)
    return out


def ua_export() -> int:
    """The console script ua-export (scripts/export's job from a wheel install): one line and exit
    status 1 where [export] is not installed, else uatools.export.cli."""
    lacking = missing(EXPORT)
    if lacking:
        print(f"ua-export: error: {', '.join(lacking)} not installed; the export needs {', '.join(EXPORT)}: "
              f"{EXPORT_HINT}", file=sys.stderr)
        return 1
    from uatools.export.cli import main

    return main()
