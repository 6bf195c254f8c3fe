"""The graph cache: graph templates kept between exports, so that an architecture's graph is made
(traced, or written from its config) once.

An entry's key is the sha256 of everything the graph depends on: the model's config (less the
fields that name a checkpoint rather than shape a model), the export options (dtype, opset,
layout), how it is made, the versions of the tools that make it (python, torch, transformers, onnx,
onnxscript, onnx_ir) and the export's own graph code. Never the weights: every checkpoint of
one model (Pythia's 154 revisions) gets the same entry.

Where: --graph-cache DIR, else $UA_GRAPH_CACHE, else $XDG_CACHE_HOME/ua-scaling/graphs
(~/.cache/ua-scaling/graphs). An entry is the folder DIR/KEY with model.onnx (the template's
proto) and layout.json (its tensors, the proto's sha256, and what the key was made of).

Safe to share between processes (a Slurm array's tasks on one file system): an entry is
written into a temporary folder beside it, synced, and renamed into place, so a reader sees a
whole entry or none; an flock on DIR/KEY.lock makes a second process wait for the first's graph
rather than make it too, and where the file system has no flock, the first rename wins and the
other copy is dropped. A damaged entry (its proto no longer matches its hash) is made again.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import tempfile

from uatools.export.common import ExportError, log
from uatools.export.template import TEMPLATE_FORMAT, Template, load_template, save_template
from uatools.export.weights import sync_dir

ENV = "UA_GRAPH_CACHE"
# Config fields that say where a checkpoint came from or how it was saved, not what it computes.
# The export's dtype is part of the key on its own.
IDENTITY_FIELDS = {"transformers_version", "torch_dtype", "dtype"}


def default_root() -> str:
    env = os.environ.get(ENV)
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ua-scaling", "graphs")


def tool_versions() -> dict:
    """The tracing tools' versions; those the export does not otherwise import (onnxscript alone
    takes seconds) from their installed metadata, not by importing them."""
    from importlib.metadata import version

    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnx": version("onnx"),
            "onnxscript": version("onnxscript"), "onnx_ir": version("onnx-ir")}


def graph_code_sha256() -> str:
    """The code that decides the graph: the wrapper, the template's tracing and the written graph."""
    from uatools.export import gpt_neox_graph, graph, template

    digest = hashlib.sha256()
    for module in (graph, template, gpt_neox_graph):
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def model_config(model) -> dict:
    """The config as it shapes the graph: private fields (a checkpoint's path and commit, the
    attention implementation chosen at load) and IDENTITY_FIELDS left out."""
    cfg = model.config.to_dict()
    return {k: v for k, v in sorted(cfg.items()) if not k.startswith("_") and k not in IDENTITY_FIELDS}


def key_of(model, dtype: str, opset: int, token_states: bool, made: str) -> tuple:
    """(key, what it was made of); made: how the graph is made ("traced", "written from the config")."""
    made_of = {"format": TEMPLATE_FORMAT, "made": made, "model_class": type(model).__name__, "config": model_config(model),
               "dtype": dtype, "opset": opset, "token_states": token_states, "versions": tool_versions(),
               "graph_code_sha256": graph_code_sha256()}
    text = json.dumps(made_of, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), made_of


def write_entry(root: str, key: str, template: Template, made_of: dict) -> None:
    """DIR/KEY, renamed into place whole; if another process's entry got there first, that one stays."""
    tmp = tempfile.mkdtemp(prefix=f".{key}.", dir=root)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared folder's entry from other users
        save_template(template, tmp, {"key": key, "made_of": made_of})
        sync_dir(tmp)
        try:
            os.rename(tmp, os.path.join(root, key))
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            return
        tmp = None
        sync_dir(root)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def key_lock(root: str, key: str):
    """An exclusive flock on DIR/KEY.lock while the entry is looked up and made; none where the
    file system refuses flock (the rename into place still keeps entries whole)."""
    import fcntl

    with open(os.path.join(root, key + ".lock"), "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError:
            pass
        yield


def make_root(root: str) -> None:
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise ExportError(f"--graph-cache {root}: cannot create the folder ({e.strerror})") from e
    if not os.access(root, os.W_OK | os.X_OK):
        raise ExportError(f"--graph-cache {root}: not writable (give another folder, or --no-graph-cache)")


def cached_template(root: str, key: str, made_of: dict, make) -> tuple:
    """(template, reused): the entry for key, or make() stored as it."""
    make_root(root)
    folder = os.path.join(root, key)
    with key_lock(root, key):
        template, damage = load_template(folder)
        if template is not None:
            return template, True
        if damage:
            log(f"  the graph cache's entry {folder} is damaged ({damage}); making it again")
            aside = tempfile.mkdtemp(prefix=f".{key}.damaged.", dir=root)
            os.rename(folder, os.path.join(aside, key))
            shutil.rmtree(aside, ignore_errors=True)
        template = make()
        write_entry(root, key, template, made_of)
        return template, False
