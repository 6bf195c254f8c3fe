"""export.json's "source": the revision's commit from the Hugging Face cache, the weights' sha256."""
import hashlib
import json
import os

import pytest

from uatools import REPO
from uatools.export import source
from uatools.export.common import ExportError
from uatools.fixtures import FIXTURE_SOURCE_KEYS, fixture_source

COMMIT_A = "0123456789abcdef0123456789abcdef01234567"
COMMIT_B = "fedcba9876543210fedcba9876543210fedcba98"


def fake_hub_cache(root, repo_id, refs, files):
    """A Hugging Face cache as huggingface_hub lays it out: refs/NAME holds the commit,
    snapshots/COMMIT/ the files (here plain files, not links into blobs/)."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    for ref, commit in refs.items():
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    for commit, names in files.items():
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True, exist_ok=True)
        for name, data in names.items():
            (snap / name).write_bytes(data)
    return repo


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_snapshot_commit_from_cache_paths(tmp_path):
    snap = f"/h/hub/models--EleutherAI--pythia-12b/snapshots/{COMMIT_A}"
    assert source.snapshot_commit(snap) == COMMIT_A
    assert source.snapshot_commit(snap + "/") == COMMIT_A
    assert source.snapshot_commit(snap + "/config.json") == COMMIT_A
    assert source.snapshot_commit(snap + "/sub/dir/model.safetensors") == COMMIT_A
    # Not a commit, not under models--*, not a snapshot at all: no commit.
    assert source.snapshot_commit("/h/hub/models--EleutherAI--pythia-12b/snapshots/main/config.json") is None
    assert source.snapshot_commit(f"/h/hub/datasets--x--y/snapshots/{COMMIT_A}/config.json") is None
    assert source.snapshot_commit(f"/h/hub/models--x--y/snapshots/{COMMIT_A.upper()}") is None
    assert source.snapshot_commit(f"/h/hub/models--x--y/refs/{COMMIT_A}") is None
    assert source.snapshot_commit(str(tmp_path)) is None
    assert source.snapshot_commit(None) is None


def test_hub_revision_resolves_to_its_snapshot_offline(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    weights_a, weights_b = b"weights of step50000", b"weights of step58000"
    fake_hub_cache(tmp_path, "EleutherAI/pythia-12b", {"step50000": COMMIT_A, "step58000": COMMIT_B},
                   {COMMIT_A: {"config.json": b"{}", "pytorch_model.bin": weights_a},
                    COMMIT_B: {"config.json": b"{}", "pytorch_model.bin": weights_b}})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    rec = source.source_record("EleutherAI/pythia-12b", "step58000")
    assert rec == {"model": "EleutherAI/pythia-12b", "revision": "step58000", "commit": COMMIT_B,
                   "commit_reason": None,
                   "weights": {"pytorch_model.bin": {"sha256": sha(weights_b), "bytes": len(weights_b)}}}
    # A commit as the revision names its snapshot directly; --source-name renames only the model.
    rec = source.source_record("EleutherAI/pythia-12b", COMMIT_A, name="pythia-12b-early")
    assert (rec["model"], rec["revision"], rec["commit"]) == ("pythia-12b-early", COMMIT_A, COMMIT_A)
    assert rec["weights"]["pytorch_model.bin"]["sha256"] == sha(weights_a)


def test_hub_revision_not_in_the_cache(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    rec = source.source_record("EleutherAI/pythia-12b", "step1")
    assert rec["commit"] is None and rec["commit_reason"] == source.NO_COMMIT_HUB and rec["weights"] == {}
    # transformers' own record (config._commit_hash) stands in when the cache has no snapshot.
    assert source.source_record("EleutherAI/pythia-12b", "step1", config_commit=COMMIT_A)["commit"] == COMMIT_A
    assert source.source_record("EleutherAI/pythia-12b", "step1", config_commit="nonsense")["commit"] is None
    # A revision the refs do not name (a short hash): config._commit_hash finds the snapshot and its weights.
    fake_hub_cache(tmp_path, "EleutherAI/pythia-12b", {}, {COMMIT_A: {"config.json": b"{}", "model.safetensors": b"w"}})
    rec = source.source_record("EleutherAI/pythia-12b", COMMIT_A[:7], config_commit=COMMIT_A)
    assert rec["commit"] == COMMIT_A and rec["weights"]["model.safetensors"]["sha256"] == sha(b"w")


def test_local_folder_has_no_commit_but_its_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"st")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pt")  # transformers prefers the safetensors file
    rec = source.source_record(str(tmp_path), None, name="fixture/x")
    assert rec == {"model": "fixture/x", "revision": None, "commit": None, "commit_reason": source.NO_COMMIT_LOCAL,
                   "weights": {"model.safetensors": {"sha256": sha(b"st"), "bytes": 2}}}
    (tmp_path / "model.safetensors").unlink()
    assert list(source.weight_hashes(str(tmp_path))) == ["pytorch_model.bin"]
    (tmp_path / "pytorch_model.bin").unlink()
    assert source.weight_hashes(str(tmp_path)) == {}


def test_local_folder_inside_the_cache_names_its_commit(tmp_path):
    repo = fake_hub_cache(tmp_path, "org/name", {}, {COMMIT_A: {"config.json": b"{}", "model.safetensors": b"w"}})
    rec = source.source_record(str(repo / "snapshots" / COMMIT_A), None)
    assert rec["commit"] == COMMIT_A and rec["commit_reason"] is None
    assert rec["weights"]["model.safetensors"]["sha256"] == sha(b"w")


def test_sharded_weights(tmp_path):
    index = {"metadata": {}, "weight_map": {"a": "model-00002-of-00002.safetensors",
                                            "b": "model-00001-of-00002.safetensors",
                                            "c": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"one")
    with pytest.raises(ExportError, match="model-00002-of-00002.safetensors"):
        source.weight_hashes(str(tmp_path))
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"two")
    got = source.weight_hashes(str(tmp_path))
    assert list(got) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert got["model-00002-of-00002.safetensors"] == {"sha256": sha(b"two"), "bytes": 3}
    (tmp_path / "model.safetensors.index.json").write_text("not json")
    with pytest.raises(ExportError, match="not a readable shard index"):
        source.weight_hashes(str(tmp_path))


def test_pytorch_shards(tmp_path):
    index = {"weight_map": {"x": "pytorch_model-00001-of-00001.bin"}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (tmp_path / "pytorch_model-00001-of-00001.bin").write_bytes(b"pt")
    assert list(source.weight_hashes(str(tmp_path))) == ["pytorch_model-00001-of-00001.bin"]


def test_committed_fixtures_keep_their_source():
    """make-fixtures drops the new keys from the committed fixtures' export.json, so a rebuild stays
    byte-identical; the committed ones have exactly model and revision."""
    for name in sorted(os.listdir(os.path.join(REPO, "tests", "fixtures"))):
        path = os.path.join(REPO, "tests", "fixtures", name, "export.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                assert tuple(json.load(f)["source"]) == FIXTURE_SOURCE_KEYS, name
    meta = {"format": "f", "source": {"model": "m", "revision": None, "commit": None, "commit_reason": "r",
                                      "weights": {}}, "dtype": "float32"}
    assert fixture_source(meta) == {"format": "f", "source": {"model": "m", "revision": None}, "dtype": "float32"}
    assert list(fixture_source(meta)) == list(meta)
