"""Fetching a cache's files over HTTPS into a local download cache (uatools.reader's remote side).

A cache folder on a web server (`https://host/path/MODEL/`) or on the Hugging Face Hub
(`hf://datasets/ORG/NAME[@REVISION]/path`, which is mapped to the Hub's plain file URLs) is
read file by file: only the files a reader asks for are downloaded, each into
`<download dir>/<sha256 of the folder URL, 16 hex>/<name>`. The download dir is the
`cache_dir` argument, else $UA_DOWNLOAD_DIR, else ~/.cache/ua-scaling/downloads. A data
file is written as `<name>.part` first, resumed with an HTTP Range request when a transfer
stops early (in the same call, or in a later one that finds the .part), checked against the
manifest's byte size and sha256, and only then renamed to its name. urllib only: no
dependency beyond the standard library.
"""
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request

from uatools.cache import CacheError
from uatools.files import sha256_file

HUB = "https://huggingface.co"
DEFAULT_DOWNLOAD_DIR = os.path.join("~", ".cache", "ua-scaling", "downloads")
BLOCK = 1 << 20
ATTEMPTS = 5  # transfers per file: the first and up to four resumptions
TIMEOUT_S = 60.0


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "hf://"))


def hf_to_https(url: str) -> str:
    """hf://datasets/ORG/NAME[@REVISION]/path -> https://huggingface.co/datasets/ORG/NAME/resolve/REVISION/path/.

    REVISION defaults to main; a revision with a slash (refs/pr/1) is percent-encoded as the Hub
    expects. Only dataset repositories: a cache is a dataset.
    """
    rest = url[len("hf://"):]
    parts = rest.strip("/").split("/")
    if len(parts) < 3 or parts[0] != "datasets" or not parts[1] or not parts[2]:
        raise CacheError(f"{url}: not a Hub dataset URL: expected hf://datasets/ORG/NAME[@REVISION]/path")
    org, name = parts[1], parts[2]
    name, _, revision = name.partition("@")
    revision = urllib.parse.unquote(revision) if revision else "main"
    if not name or not revision:
        raise CacheError(f"{url}: not a Hub dataset URL: expected hf://datasets/ORG/NAME[@REVISION]/path")
    path = "/".join(urllib.parse.quote(p) for p in parts[3:] if p)
    base = f"{HUB}/datasets/{org}/{name}/resolve/{urllib.parse.quote(revision, safe='')}/"
    return base + (path + "/" if path else "")


def folder_url(source: str) -> str:
    """The HTTPS URL of the cache folder, ending in '/', for an http(s):// or hf:// source."""
    url = hf_to_https(source) if source.startswith("hf://") else source
    return url if url.endswith("/") else url + "/"


def download_dir(base_url: str, cache_dir=None) -> str:
    """The local folder of one remote cache folder's downloads (created)."""
    root = cache_dir or os.environ.get("UA_DOWNLOAD_DIR") or DEFAULT_DOWNLOAD_DIR
    d = os.path.join(os.path.expanduser(root), hashlib.sha256(base_url.encode()).hexdigest()[:16])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "url.txt"), "w") as f:  # which folder this is, for whoever looks
        f.write(base_url + "\n")
    return d


def http_error(url: str, e: Exception) -> CacheError:
    if isinstance(e, urllib.error.HTTPError):
        what = "not found" if e.code == 404 else "refused"
        return CacheError(f"{url}: HTTP {e.code} {e.reason} ({what})")
    reason = getattr(e, "reason", None) or e
    return CacheError(f"{url}: download failed: {reason}")


def fetch_bytes(url: str) -> bytes:
    """The whole body of a small file (the manifest), or a CacheError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise http_error(url, e) from None


def transfer(url: str, part: str, expected_bytes: int) -> None:
    """Append to `part` what the server sends from its current size on (a Range request when the
    .part holds bytes already; a server that ignores Range sends it all again, and the .part is
    rewritten). Returns when the body ends, whether it was complete or not."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url)
    if have:
        req.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        mode = "ab"
        if have and (resp.status != 206 or not content_range_starts_at(resp, have)):
            mode = "wb"  # not the partial content asked for: start the file again
        with open(part, mode) as f:
            for block in iter(lambda: resp.read(BLOCK), b""):
                f.write(block)
                if f.tell() > expected_bytes:
                    return  # more than the manifest says: the check after the transfer refuses it


def content_range_starts_at(resp, start: int) -> bool:
    cr = resp.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        return int(cr.split()[1].split("-")[0]) == start
    except (IndexError, ValueError):
        return False


def download(url: str, dest: str, entry: dict) -> None:
    """`url` into `dest`, checked against a manifest entry {bytes, sha256}; resumes a .part left
    by an earlier transfer. Refuses (CacheError naming the URL, .part removed) a file whose size
    or sha256 is not the manifest's."""
    part = dest + ".part"
    if os.path.exists(part) and os.path.getsize(part) > entry["bytes"]:
        os.remove(part)
    last = None
    for _ in range(ATTEMPTS):
        if os.path.exists(part) and os.path.getsize(part) == entry["bytes"]:
            break
        try:
            transfer(url, part, entry["bytes"])
            last = None
        except urllib.error.HTTPError as e:
            if e.code == 416 and os.path.exists(part):  # the .part is no prefix the server can resume
                os.remove(part)
                continue
            raise http_error(url, e) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            last = e  # dropped mid-file: resume from what arrived
        if os.path.exists(part) and os.path.getsize(part) > entry["bytes"]:
            break
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if have < entry["bytes"]:
        cause = f" ({last})" if last else ""
        raise CacheError(f"{url}: download stopped at {have} of {entry['bytes']} bytes after {ATTEMPTS} "
                         f"attempts{cause}; call again to resume from {part}")
    got = sha256_file(part) if have == entry["bytes"] else None
    if got != entry["sha256"]:
        os.remove(part)
        found = f"{have} bytes" if got is None else f"sha256 {got}"
        raise CacheError(f"{url}: {found}, but manifest.json says {entry['bytes']} bytes, sha256 "
                         f"{entry['sha256']}: the file changed or is another cache's; refused")
    os.replace(part, dest)


def fetch_file(base_url: str, ddir: str, name: str, entry: dict) -> str:
    """The local path of one data file of a remote cache, downloaded unless a copy with the
    manifest's size and sha256 is in the download dir already (a copy that differs, from an
    earlier version of the remote cache, is fetched again)."""
    dest = os.path.join(ddir, name)
    if os.path.exists(dest):
        if os.path.getsize(dest) == entry["bytes"] and sha256_file(dest) == entry["sha256"]:
            return dest
        os.remove(dest)
    download(base_url + urllib.parse.quote(name), dest, entry)
    return dest


def fetch_manifest(base_url: str, ddir: str) -> str:
    """Download manifest.json (always: it says which bytes the data files must have) into the
    download dir; returns its local path."""
    data = fetch_bytes(base_url + "manifest.json")
    dest = os.path.join(ddir, "manifest.json")
    with open(dest + ".tmp", "wb") as f:
        f.write(data)
    os.replace(dest + ".tmp", dest)
    return dest
