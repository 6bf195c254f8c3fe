"""export.json's "source": which checkpoint the export read, provably.

Hugging Face revisions are branch names, and a branch can serve another revision's weights
(EleutherAI/pythia issues 205 and 206: pythia-2.8b step branches with the final weights,
pythia-12b step50000 and step58000 alike). So besides the model and the revision asked for,
"source" records the commit the revision resolved to and the sha256 of every weight file
from_pretrained read, by file name; two exports with the same weight hash hold the same
weights whatever their revision says.

Works offline: the commit is the name of the Hugging Face cache's snapshot folder that
holds the checkpoint (HF_HUB_CACHE/models--ORG--NAME/snapshots/<commit>/), and the weight
files are hashed where that folder (or a local checkpoint folder) has them.
"""
from __future__ import annotations

import json
import os
import re

from uatools.export.common import ExportError, first_line
from uatools.files import sha256_file

COMMIT = re.compile(r"^[0-9a-f]{40}$")
# transformers' order (modeling_utils._get_resolved_checkpoint_files, with use_safetensors
# left unset): from_pretrained reads the first of these the checkpoint has.
WEIGHT_CANDIDATES = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                     "pytorch_model.bin.index.json"]
NO_COMMIT_LOCAL = "a local checkpoint folder, not a Hugging Face cache snapshot: no Hub commit"
NO_COMMIT_HUB = "the Hugging Face cache holds no snapshot of this revision (loaded some other way)"


def snapshot_commit(path) -> str | None:
    """The commit a Hugging Face cache path names (.../models--ORG--NAME/snapshots/<40 hex>[/...]),
    else None."""
    if not path:
        return None
    parts = os.path.abspath(str(path)).replace(os.sep, "/").split("/")
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--") and COMMIT.match(parts[i + 1]):
            return parts[i + 1]
    return None


def hub_snapshot_dir(model_id: str, revision) -> str | None:
    """The cache's snapshot folder of model_id at revision (what from_pretrained just loaded), found
    from the cache's refs without the network; None if the cache has none."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(model_id, "config.json", revision=revision or "main")
    except (ValueError, OSError):  # not a repo id (the hub's validation), unreadable cache
        return None
    return os.path.dirname(found) if isinstance(found, str) else None


def weight_file_names(checkpoint_dir: str) -> list:
    """The weight files from_pretrained reads from a checkpoint folder: one file, or the shards an
    index names (sorted); [] if it has none of transformers' weight layouts."""
    for name in WEIGHT_CANDIDATES:
        path = os.path.join(checkpoint_dir, name)
        if not os.path.isfile(path):
            continue
        if not name.endswith(".index.json"):
            return [name]
        try:
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ExportError(f"{path}: not a readable shard index ({first_line(e)})") from e
        missing = [s for s in shards if not os.path.isfile(os.path.join(checkpoint_dir, s))]
        if missing:
            raise ExportError(f"{path}: names shards that are not there: {', '.join(missing)}")
        return shards
    return []


def weight_hashes(checkpoint_dir: str) -> dict:
    """{file name: {"sha256", "bytes"}} of every weight file from_pretrained reads from the folder."""
    out = {}
    for name in weight_file_names(checkpoint_dir):
        path = os.path.join(checkpoint_dir, name)
        out[name] = {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}
    return out


def checkpoint_dir_and_commit(model: str, revision, config_commit=None):
    """(folder the weights were read from or None, commit or None, why no commit or None)."""
    if os.path.isdir(model):
        commit = snapshot_commit(model)
        return model, commit, None if commit else NO_COMMIT_LOCAL
    folder = hub_snapshot_dir(model, revision)
    if folder is None and isinstance(config_commit, str) and COMMIT.match(config_commit):
        # transformers' own record (config._commit_hash), e.g. for a revision given as a short hash
        folder = hub_snapshot_dir(model, config_commit)
        if folder is None:
            return None, config_commit, None
    commit = snapshot_commit(folder)
    return folder, commit, None if commit else NO_COMMIT_HUB


def source_record(model: str, revision, name=None, config_commit=None) -> dict:
    """export.json's "source": model (name or model as given), revision (as asked for), commit
    (the revision's resolved commit, or null with commit_reason saying why) and weights."""
    folder, commit, reason = checkpoint_dir_and_commit(model, revision, config_commit)
    return {"model": name or model, "revision": revision, "commit": commit, "commit_reason": reason,
            "weights": weight_hashes(folder) if folder else {}}
