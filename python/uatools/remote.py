"""Fetching a cache's files over HTTPS into a local download cache (uatools.reader's remote side).

A cache folder on a web server (`https://host/ROOT/MODEL/`) or on the Hugging Face Hub
(`hf://datasets/ORG/NAME[@REVISION]/ROOT/MODEL`, which is mapped to the Hub's plain file URLs) is
read file by file: only the files a reader asks for are downloaded, each into
`<download dir>/<16 hex of the sha256 of the root URL ROOT/>/<MODEL>/<name>`, the layout
`analyze --cache URL` uses too (analyze/src/cache/remote.rs), so a notebook and analyze never
fetch a file twice; `url.txt` beside the model folders holds the root URL. The download dir is
the `cache_dir` argument, else $UA_DOWNLOAD_DIR (set and not empty), else
~/.cache/ua-scaling/downloads. A data file is written as `<name>.part` first, resumed with an
HTTP Range request when a transfer breaks after moving bytes (in the same call, or in a later one
that finds the .part), checked against the manifest's byte size and sha256, and only then renamed
to its name. A server that sends no byte for $UA_STALL_SECONDS (default 60) has stalled: the call
ends naming the URL, and the next one resumes. urllib only: no dependency beyond the standard
library.
"""
import hashlib
import http.client
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

from uatools.cache import CacheError
from uatools.files import sha256_file

HUB = "https://huggingface.co"
DEFAULT_DOWNLOAD_DIR = os.path.join("~", ".cache", "ua-scaling", "downloads")
BLOCK = 1 << 20
ATTEMPTS = 5  # transfers per file per call; another only after one that moved bytes and broke
STALL_ENV = "UA_STALL_SECONDS"
DEFAULT_STALL_S = 60.0


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


def stall_seconds() -> float:
    """$UA_STALL_SECONDS (how long a transfer may go without a byte), else 60."""
    text = os.environ.get(STALL_ENV, "").strip()
    if not text:
        return DEFAULT_STALL_S
    try:
        s = float(text)
    except ValueError:
        s = float("nan")
    if not 0 < s < 1e6:
        raise CacheError(f"{STALL_ENV}={text}: not a number of seconds above 0 (how long a download may go "
                         f"without a byte; default {DEFAULT_STALL_S:g})")
    return s


def root_and_model(base_url: str):
    """A model folder's URL (ending in '/') split into its root URL and the folder's name, which must
    be one folder (no '/', not '.' or '..'): the files go to <download dir>/<root key>/<name>/."""
    root, _, segment = base_url[:-1].rpartition("/")
    name = urllib.parse.unquote(segment)
    if name in ("", ".", "..") or "/" in name or "\\" in name or "://" not in root:
        raise CacheError(f"{base_url}: {name!r} is not a model folder's name; give the URL of the folder that "
                         "holds manifest.json, without '.' or '..'")
    return root + "/", name


def local_folder(base_url: str, cache_dir=None) -> str:
    """The local folder of one remote cache folder's downloads (created):
    <download dir>/<16 hex of the root URL's sha256>/<model folder name>, as analyze has it."""
    root_url, name = root_and_model(base_url)
    base = cache_dir or os.environ.get("UA_DOWNLOAD_DIR") or DEFAULT_DOWNLOAD_DIR
    root = os.path.join(os.path.expanduser(base), hashlib.sha256(root_url.encode()).hexdigest()[:16])
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(root, "url.txt"), "w") as f:  # which root this is, for whoever looks
        f.write(root_url + "\n")
    return d


class Stalled(Exception):
    """No byte for the stall limit."""


def is_timeout(e: BaseException) -> bool:
    return isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError)


def request_error(url: str, e: Exception, data_file: bool = False) -> CacheError:
    """One line for a failed request: an HTTP status, a stall, TLS against a plain-HTTP server."""
    if isinstance(e, urllib.error.HTTPError):
        if e.code == 404:
            what = ("the server lacks a file that the model's manifest.json lists (an incomplete upload)"
                    if data_file else "no cache folder at this URL (check the model folder's name)")
        else:
            what = "refused"
        return CacheError(f"{url}: HTTP {e.code} {e.reason} ({what})")
    if is_timeout(e):
        return CacheError(f"{url}: stalled: the server sent no byte for {stall_seconds():g} s; call again to "
                          f"retry ({STALL_ENV} sets the limit)")
    reason = getattr(e, "reason", None) or e
    if isinstance(reason, ssl.SSLError):
        if "WRONG_VERSION_NUMBER" in str(reason) or "record layer failure" in str(reason):
            return CacheError(f"{url}: the server does not answer in TLS (a plain-HTTP server?); use http:// for it")
        return CacheError(f"{url}: TLS failed: {reason}")
    return CacheError(f"{url}: download failed: {reason}")


def fetch_bytes(url: str) -> bytes:
    """The whole body of a small file (the manifest), or a CacheError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=stall_seconds()) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise request_error(url, e) from None


def announced_size(resp, have: int):
    """(whole file's size as the response gives it, whether its body continues `have`)."""
    if resp.status == 206:
        cr = resp.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
        try:
            span, total = cr.split()[1].split("/")
            return int(total), int(span.split("-")[0]) == have
        except (IndexError, ValueError):
            return None, False
    length = resp.headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), have == 0


def transfer(url: str, part: str, expected_bytes: int) -> int:
    """Append to `part` what the server sends from its current size on (a Range request when the
    .part holds bytes already; a server that ignores Range sends it all again, and the .part is
    rewritten). Returns the bytes written when the body ends, whether it was complete or not.
    Raises CacheError for what no retry changes (an HTTP error, a size not the manifest's),
    Stalled (with .written) for a stall."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url)
    if have:
        req.add_header("Range", f"bytes={have}-")
    written = 0
    try:
        with urllib.request.urlopen(req, timeout=stall_seconds()) as resp:
            total, continues = announced_size(resp, have)
            if resp.status == 206 and not continues:
                raise CacheError(f"{url}: the server answered another range than the bytes={have}- asked for; "
                                 "refused")
            if total is not None and total != expected_bytes:
                raise CacheError(f"{url}: the server's file is {total} bytes, but manifest.json says "
                                 f"{expected_bytes}: the file changed or is another cache's; refused")
            with open(part, "ab" if continues else "wb") as f:
                for block in iter(lambda: resp.read1(BLOCK), b""):  # what has arrived: a stall keeps it
                    f.write(block)
                    written += len(block)
                    if f.tell() > expected_bytes:
                        return written  # more than the manifest says: the check after the transfer refuses it
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is no prefix the server can resume
            raise CacheError(f"{url}: HTTP 416: the server's file is not longer than the {have} bytes already "
                             f"here, but manifest.json says {expected_bytes}; refused") from None
        raise request_error(url, e, data_file=True) from None
    except (TimeoutError, urllib.error.URLError) as e:
        if not is_timeout(e):
            if written == 0:
                raise request_error(url, e) from None
            return written
        stall = Stalled()
        stall.written = written
        raise stall from None
    except (OSError, http.client.HTTPException):
        if written == 0:
            raise
        return written  # dropped mid-file: resume from what arrived
    return written


def download(url: str, part: str, expected_bytes: int) -> None:
    """Transfers into `part` until it holds `expected_bytes`: again after a transfer that moved bytes
    and broke, up to ATTEMPTS in all. A stall, or a transfer that moved nothing, ends the call with a
    CacheError naming the URL; the .part stays for the next call to resume."""
    last = None
    for _ in range(ATTEMPTS):
        try:
            moved = transfer(url, part, expected_bytes)
            last = None
        except Stalled:
            have = os.path.getsize(part) if os.path.exists(part) else 0
            raise CacheError(f"{url}: stalled: the server sent no byte for {stall_seconds():g} s after {have} of "
                             f"{expected_bytes} bytes; call again to resume from {part} ({STALL_ENV} sets the "
                             "limit)") from None
        except (OSError, http.client.HTTPException) as e:
            moved, last = 0, e
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if have >= expected_bytes or moved == 0:
            break
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if have < expected_bytes:
        cause = f" ({last})" if last else ""
        raise CacheError(f"{url}: download stopped at {have} of {expected_bytes} bytes{cause}; call again to resume "
                         f"from {part}")


def fetch_file(base_url: str, ddir: str, name: str, entry: dict) -> str:
    """The local path of one data file of a remote cache, downloaded unless a copy with the
    manifest's size and sha256 is in the download dir already (a copy that differs, from an
    earlier version of the remote cache, is fetched again). Refuses (CacheError naming the URL,
    .part removed) a file whose size or sha256 is not the manifest's."""
    dest = os.path.join(ddir, name)
    size, sha = entry["bytes"], entry["sha256"]
    if os.path.exists(dest):
        if os.path.getsize(dest) == size and sha256_file(dest) == sha:
            return dest
        os.remove(dest)
    url = base_url + urllib.parse.quote(name)
    part = dest + ".part"
    # Bytes left by an earlier call may be another version's: a whole that does not match is first
    # blamed on them (downloaded once more from the start), not on the server.
    earlier = os.path.getsize(part) if os.path.exists(part) else 0
    if earlier >= size:
        if earlier == size and sha256_file(part) == sha:
            os.replace(part, dest)
            return dest
        os.remove(part)
        earlier = 0
    download(url, part, size)
    if earlier and os.path.getsize(part) == size and sha256_file(part) != sha:
        os.remove(part)
        download(url, part, size)
    have = os.path.getsize(part)
    got = sha256_file(part) if have == size else None
    if got != sha:
        os.remove(part)
        found = f"{have} bytes" if got is None else f"sha256 {got}"
        raise CacheError(f"{url}: {found}, but manifest.json says {size} bytes, sha256 {sha}: the file changed "
                         "or is another cache's; refused")
    os.replace(part, dest)
    return dest


def fetch_manifest(base_url: str, ddir: str) -> str:
    """Download manifest.json (always: it says which bytes the data files must have) into the
    download dir; returns its local path."""
    data = fetch_bytes(base_url + "manifest.json")
    dest = os.path.join(ddir, "manifest.json")
    with open(dest + ".part", "wb") as f:
        f.write(data)
    os.replace(dest + ".part", dest)
    return dest
