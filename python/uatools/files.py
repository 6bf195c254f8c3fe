"""Files: content hashes and folder sizes."""
import hashlib
import json
import os


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def dir_bytes(path: str) -> int:
    """Total size of the files under a folder (recursively)."""
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def read_json(path: str):
    """A JSON file's value."""
    with open(path) as f:
        return json.load(f)


def write_json(path: str, obj, **dump_args) -> None:
    """obj as JSON into path (json.dump's arguments, e.g. indent)."""
    with open(path, "w") as f:
        json.dump(obj, f, **dump_args)
