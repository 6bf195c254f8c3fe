"""The shared helpers: hashing, folder sizes, finding the binaries."""
import hashlib
import os

from uatools import REPO, binaries
from uatools.files import dir_bytes, read_json, sha256_file, write_json


def test_sha256_file(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert sha256_file(str(p)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"
    big.write_bytes(b"\0" * ((1 << 22) + 1))  # more than one read block
    assert sha256_file(str(big)) == hashlib.sha256(b"\0" * ((1 << 22) + 1)).hexdigest()


def test_dir_bytes_and_json(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"12345")
    (tmp_path / "y").write_bytes(b"12")
    assert dir_bytes(str(tmp_path)) == 7
    write_json(str(tmp_path / "j.json"), {"k": [1, 2]}, indent=1)
    assert read_json(str(tmp_path / "j.json")) == {"k": [1, 2]}


def make_exe(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_find_bin_order(tmp_path, monkeypatch):
    monkeypatch.delenv("EXTRACT_BIN", raising=False)
    monkeypatch.setenv("CARGO_TARGET_DIR", str(tmp_path / "target"))
    cands = binaries.bin_candidates("extract", dirs=[str(tmp_path / "bin")])
    assert cands == [str(tmp_path / "bin" / "extract"), str(tmp_path / "target" / "release" / "extract"),
                     os.path.join(REPO, "target", "release", "extract")]
    make_exe(tmp_path / "target" / "release" / "extract")
    assert binaries.find_bin("extract", dirs=[str(tmp_path / "bin")]) == (
        str(tmp_path / "target" / "release" / "extract"), True)
    make_exe(tmp_path / "bin" / "extract")
    assert binaries.find_bin("extract", dirs=[str(tmp_path / "bin")])[0] == str(tmp_path / "bin" / "extract")
    monkeypatch.setenv("EXTRACT_BIN", str(tmp_path / "env-extract"))  # named, but not there: skipped
    assert binaries.default_extract_bin() == str(tmp_path / "target" / "release" / "extract")
    make_exe(tmp_path / "env-extract")
    assert binaries.default_extract_bin() == str(tmp_path / "env-extract")


def test_find_bin_nothing_found(tmp_path, monkeypatch):
    monkeypatch.delenv("ANALYZE_BIN", raising=False)
    monkeypatch.setenv("CARGO_TARGET_DIR", str(tmp_path / "none"))
    assert binaries.find_bin("no-such-binary") == (str(tmp_path / "none" / "release" / "no-such-binary"), False)
