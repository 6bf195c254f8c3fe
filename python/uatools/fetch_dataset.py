"""Fetch the seed dataset (buk81/uniformity-asymmetry dataset.json) with a pinned sha256.

The repository commits a copy (tests/data/seed-dataset.json, MIT, see tests/data/SOURCES.md);
this script fetches the upstream file again, or checks a local copy, against the same pinned
sha256, so every run analyses exactly the bytes the seed analysed.

  scripts/fetch-dataset                       # -> data/seed-dataset.json
  scripts/fetch-dataset --out some/where.json
  scripts/fetch-dataset --from local-copy.json  # verify and install a local copy (offline)
"""
import argparse
import os
import sys
import tempfile
import urllib.request
from typing import NoReturn

URL = "https://raw.githubusercontent.com/buk81/uniformity-asymmetry/main/dataset.json"
SHA256 = "44f82b8a949c15300cf50b4548c3695803bc83311005979226c1b3d3944e49c5"
from uatools import REPO as REPO_ROOT
from uatools.files import sha256_file

DEFAULT_OUT = os.path.join(REPO_ROOT, "data", "seed-dataset.json")


def fail(msg: str) -> NoReturn:
    print(f"fetch-dataset: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_source(args) -> bytes:
    if args.from_file:
        try:
            with open(args.from_file, "rb") as f:
                return f.read()
        except OSError as e:
            fail(f"cannot read {args.from_file}: {e.strerror}")
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:
            return resp.read()
    except Exception as e:  # noqa: BLE001 - network errors come in many types; all end the same way
        fail(f"download of {args.url} failed: {e}")


def write_verified(data: bytes, out: str, expected: str) -> None:
    # Temp file in the destination directory so the final rename is atomic; a hash
    # mismatch deletes the temp file, so a wrong dataset never appears at `out`.
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fetch-dataset.", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        got = sha256_file(tmp)
        if got != expected:
            fail(f"sha256 mismatch: expected {expected}, got {got}; nothing written")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main() -> None:
    try:
        run()
    except KeyboardInterrupt:
        fail("interrupted")


def run() -> None:
    p = argparse.ArgumentParser(
        description="Download the seed dataset and verify its pinned sha256 "
        "(atomic write; refuses and deletes on mismatch).")
    p.add_argument("--out", default=DEFAULT_OUT, help="destination (default: data/seed-dataset.json)")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="take the bytes from a local file instead of downloading")
    p.add_argument("--url", default=URL, help=f"source URL (default: {URL})")
    p.add_argument("--sha256", default=SHA256, help="expected sha256 (default: the pinned one)")
    p.add_argument("--timeout", type=float, default=60.0, help="download timeout in seconds")
    p.add_argument("--force", action="store_true", help="rewrite even if a verified copy exists")
    args = p.parse_args()

    if not args.force and os.path.isfile(args.out) and sha256_file(args.out) == args.sha256:
        print(f"{args.out}: already present, sha256 ok")
        return
    data = read_source(args)
    write_verified(data, args.out, args.sha256)
    print(f"{args.out}: {len(data)} bytes, sha256 {args.sha256} ok")
