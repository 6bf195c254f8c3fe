"""uatools.reader (load_cache) on the committed demo caches, local and over HTTP, and its refusals."""
import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow.parquet as pq
import pytest

from uatools import REPO
from uatools.cache import CacheError
from uatools.reader import load_cache
from uatools.remote import STALL_ENV, folder_url, hf_to_https

DEMO = os.path.join(REPO, "tests", "golden", "demo-cache")
MODELS = ["tiny-a", "tiny-b", "tiny-c", "tiny-d"]


def manifest_of(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)


def edit_manifest(folder, edit):
    m = manifest_of(folder)
    edit(m)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(m, f, indent=2)


def flip_byte(path, offset=None):
    """Change one byte in the middle of a file (same size)."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2 if offset is None else offset)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.fixture
def copy(tmp_path):
    """A writable copy of one demo cache (the committed files are never modified)."""
    def make(model="tiny-a"):
        dst = tmp_path / "cache" / model
        shutil.copytree(os.path.join(DEMO, model), dst)
        return str(dst)
    return make


def direct_layer(folder, layer, pooling):
    t = pq.ParquetFile(os.path.join(folder, "embeddings.parquet")).read_row_group(layer, columns=["statement_id",
                                                                                                  pooling])
    assert t.column("statement_id").to_pylist() == sorted(t.column("statement_id").to_pylist())
    return np.array(t.column(pooling).to_pylist(), dtype=np.float32)


# ---- a local folder ----

@pytest.mark.parametrize("model", MODELS)
def test_statements_and_layers_match_the_files(model):
    folder = os.path.join(DEMO, model)
    m = manifest_of(folder)
    c = load_cache(folder)
    assert c.manifest == m
    assert len(c.statements) == m["files"]["statements.parquet"]["rows"] == m["dataset"]["n_statements"]
    assert c.statements["statement_id"].tolist() == list(range(len(c.statements)))
    assert c.poolings == m["run"]["poolings"] and c.n_layers == m["model"]["n_layers"]
    assert list(c.layers) == list(range(m["model"]["n_layers"] + 1))
    for layer in c.layers:
        x = c.layer(layer, "mean")
        assert x.dtype == np.float32 and x.shape == (len(c.statements), m["model"]["hidden_size"])
        np.testing.assert_array_equal(x, direct_layer(folder, layer, "mean"))
    np.testing.assert_array_equal(c.layer(2, "last"), direct_layer(folder, 2, "last"))


def test_embeddings_are_hashed_once_and_only_when_a_layer_is_asked_for(copy, monkeypatch):
    from uatools import reader

    hashed = []
    real = reader.sha256_file
    monkeypatch.setattr(reader, "sha256_file", lambda p: hashed.append(os.path.basename(p)) or real(p))
    c = load_cache(copy())
    assert hashed == ["statements.parquet"]
    c.layer(0, "mean")
    c.layer(5, "mean_skip_first")
    assert hashed == ["statements.parquet", "embeddings.parquet"]


def test_refuses_a_missing_or_incomplete_manifest(tmp_path, copy):
    with pytest.raises(CacheError, match=r"manifest\.json: missing"):
        load_cache(str(tmp_path))
    folder = copy()
    edit_manifest(folder, lambda m: m.update(complete=False))
    with pytest.raises(CacheError, match=r"manifest\.json: complete: false: the extraction has not finished"):
        load_cache(folder)
    edit_manifest(folder, lambda m: (m.update(complete=True), m["files"].pop("statements.parquet")))
    with pytest.raises(CacheError, match=r"files\.statements\.parquet missing"):
        load_cache(folder)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        f.write('{"schema_version": 1, ')
    with pytest.raises(CacheError, match="not valid JSON"):
        load_cache(folder)


def test_refuses_changed_statements(copy):
    folder = copy()
    path = os.path.join(folder, "statements.parquet")
    flip_byte(path)
    with pytest.raises(CacheError, match=r"statements\.parquet: sha256 [0-9a-f]{64}, but manifest\.json says"):
        load_cache(folder)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(CacheError, match=r"statements\.parquet: \d+ bytes, but manifest\.json says \d+"):
        load_cache(folder)


def test_refuses_statements_of_another_dataset(copy):
    folder = copy()
    edit_manifest(folder, lambda m: m["dataset"].update(statements_sha256="0" * 64))
    with pytest.raises(CacheError, match="another dataset's statements"):
        load_cache(folder)


def test_refuses_changed_embeddings_at_the_first_layer(copy):
    folder = copy()
    flip_byte(os.path.join(folder, "embeddings.parquet"))
    c = load_cache(folder)  # the statements are fine
    for _ in range(2):  # refused every time, not only the first
        with pytest.raises(CacheError, match=r"embeddings\.parquet: sha256 .* refused"):
            c.layer(1, "mean")


def test_does_not_check_the_dataset_card(copy):
    folder = copy()
    card = os.path.join(folder, "README.md")
    with open(card, "w") as f:
        f.write("---\nedited on the Hub\n---\n")
    edit_manifest(folder, lambda m: m["files"].update({"README.md": {"rows": 0, "bytes": 1, "sha256": "0" * 64}}))
    assert load_cache(folder).layer(0, "mean").shape == (140, 32)


def test_refuses_unknown_pooling_and_layers_out_of_range(copy):
    c = load_cache(copy())
    with pytest.raises(CacheError, match=r"embeddings\.parquet: no pooling 'max'; this cache has mean, "
                                         "mean_skip_first, last"):
        c.layer(0, "max")
    for bad in (7, -1):
        with pytest.raises(CacheError, match=rf"layer {bad} out of range: this cache holds layers 0\.\.6"):
            c.layer(bad, "mean")
    with pytest.raises(CacheError, match="layer '3' is not an integer"):
        c.layer("3", "mean")
    assert c.layer(np.int64(6), "mean").shape == (140, 32)


def test_sidecar_only_cache_has_statements_but_no_layers(copy):
    folder = copy()
    os.remove(os.path.join(folder, "embeddings.parquet"))
    edit_manifest(folder, lambda m: (m["files"].pop("embeddings.parquet"), m["grams"].update(embeddings_sha256=None)))
    c = load_cache(folder)
    assert c.sidecar_only and c.compact_only and len(c.statements) == 140
    with pytest.raises(CacheError, match=r"manifest\.json: a sidecar-only cache: it has no embeddings\.parquet"):
        c.layer(0, "mean")


# ---- over HTTP ----

class Server:
    """A folder served over HTTP with Range support; logs (path, Range) per GET; can drop a file's
    first transfer after some bytes, stall it after some bytes (send nothing more until stopped),
    send it in slow pieces, or ignore Range."""

    def __init__(self, root):
        self.root, self.log, self.drops, self.honour_range = root, [], {}, True
        self.stalls, self.trickles, self.released = {}, {}, threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that gave up (a stall) or spoke TLS: the test checks the client's side

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def handle(self, h):
        rng = h.headers.get("Range")
        self.log.append((h.path, rng))
        path = os.path.join(self.root, h.path.lstrip("/"))
        if not os.path.isfile(path):
            h.send_error(404, "Not Found")
            return
        with open(path, "rb") as f:
            data = f.read()
        start = int(rng.split("=")[1].split("-")[0]) if rng and self.honour_range else 0
        if start >= len(data) and start:
            h.send_error(416, "Range Not Satisfiable")
            return
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        body = data[start:]
        stall = self.stalls.pop(h.path, None)
        if stall is not None:
            h.wfile.write(body[:stall])
            h.wfile.flush()
            self.released.wait(60)  # the client gives up first
            h.close_connection = True
            return
        piece, pause = self.trickles.get(h.path, (len(body), 0))
        cut = self.drops.pop(h.path, None)
        body = body if cut is None else body[:cut]
        for i in range(0, len(body), piece):
            h.wfile.write(body[i:i + piece])
            h.wfile.flush()
            time.sleep(pause)
        h.close_connection = cut is not None

    def stop(self):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    shutil.copytree(DEMO, root)
    s = Server(str(root))
    yield s
    s.stop()


def local_files(ddir):
    return sorted(f for f in os.listdir(ddir) if f != "url.txt")


def test_http_gives_the_numbers_of_the_local_folder(served, tmp_path):
    c = load_cache(served.url + "tiny-b", cache_dir=str(tmp_path / "dl"))
    local = load_cache(os.path.join(DEMO, "tiny-b"))
    assert c.manifest == local.manifest
    assert c.statements.equals(local.statements)
    assert local_files(c.files.folder) == ["manifest.json", "statements.parquet"]  # nothing else yet
    for layer in (0, 3, 6):
        np.testing.assert_array_equal(c.layer(layer, "mean_skip_first"), local.layer(layer, "mean_skip_first"))
    assert local_files(c.files.folder) == ["embeddings.parquet", "manifest.json", "statements.parquet"]
    assert [p for p, _ in served.log] == ["/tiny-b/manifest.json", "/tiny-b/statements.parquet",
                                          "/tiny-b/embeddings.parquet"]  # grams.parquet never fetched
    # Again: the manifest is fetched, the verified copies are used.
    again = load_cache(served.url + "tiny-b/", cache_dir=str(tmp_path / "dl"))
    np.testing.assert_array_equal(again.layer(6, "mean"), local.layer(6, "mean"))
    assert [p for p, _ in served.log[3:]] == ["/tiny-b/manifest.json"]


def test_a_dropped_connection_is_resumed_with_a_range_request(served, tmp_path):
    served.drops["/tiny-a/embeddings.parquet"] = 100_000
    c = load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl"))
    np.testing.assert_array_equal(c.layer(4, "mean"), direct_layer(os.path.join(DEMO, "tiny-a"), 4, "mean"))
    assert served.log[-2:] == [("/tiny-a/embeddings.parquet", None), ("/tiny-a/embeddings.parquet", "bytes=100000-")]
    assert not os.path.exists(os.path.join(c.files.folder, "embeddings.parquet.part"))


def test_a_part_file_left_by_an_earlier_session_is_resumed(served, tmp_path):
    ddir = load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl")).files.folder
    with open(os.path.join(DEMO, "tiny-a", "statements.parquet"), "rb") as f:
        head = f.read(4000)
    os.remove(os.path.join(ddir, "statements.parquet"))
    with open(os.path.join(ddir, "statements.parquet.part"), "wb") as f:
        f.write(head)
    c = load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl"))
    assert len(c.statements) == 140
    assert served.log[-1] == ("/tiny-a/statements.parquet", "bytes=4000-")


def test_a_server_that_ignores_range_sends_the_file_again(served, tmp_path):
    served.drops["/tiny-c/statements.parquet"] = 5000
    served.honour_range = False
    c = load_cache(served.url + "tiny-c", cache_dir=str(tmp_path / "dl"))
    assert c.statements.equals(load_cache(os.path.join(DEMO, "tiny-c")).statements)


def test_a_changed_remote_file_is_refused_naming_the_url(served, tmp_path):
    flip_byte(os.path.join(served.root, "tiny-a", "embeddings.parquet"))
    c = load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl"))
    url = served.url + "tiny-a/embeddings.parquet"
    with pytest.raises(CacheError, match=rf"^{url}: sha256 [0-9a-f]{{64}}, but manifest\.json says .*; refused$"):
        c.layer(0, "mean")
    assert local_files(c.files.folder) == ["manifest.json", "statements.parquet"]  # no .part, no file
    with open(os.path.join(served.root, "tiny-a", "statements.parquet"), "ab") as f:
        f.write(b"tail")
    shutil.rmtree(c.files.folder)
    with pytest.raises(CacheError, match=r"statements\.parquet: the server's file is 10753 bytes, but manifest\.json "
                                         r"says 10749: .*; refused$"):
        load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl"))


def test_a_stale_downloaded_copy_is_fetched_again(served, tmp_path):
    c = load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl"))
    flip_byte(os.path.join(c.files.folder, "statements.parquet"))
    n = len(served.log)
    assert len(load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl")).statements) == 140
    assert [p for p, _ in served.log[n:]] == ["/tiny-a/manifest.json", "/tiny-a/statements.parquet"]


def test_404_is_a_clear_error(served, tmp_path):
    with pytest.raises(CacheError, match=rf"^{served.url}nope/manifest\.json: HTTP 404 Not Found \(no cache folder "
                                         r"at this URL \(check the model folder's name\)\)$"):
        load_cache(served.url + "nope", cache_dir=str(tmp_path / "dl"))
    os.remove(os.path.join(served.root, "tiny-d", "embeddings.parquet"))
    c = load_cache(served.url + "tiny-d", cache_dir=str(tmp_path / "dl"))
    n = len(served.log)
    with pytest.raises(CacheError, match=r"tiny-d/embeddings\.parquet: HTTP 404 Not Found \(the server lacks a file "
                                         r"that the model's manifest\.json lists \(an incomplete upload\)\)$"):
        c.layer(0, "mean")
    assert len(served.log) == n + 1, "one request: a retry cannot help"


def test_download_dir_from_the_environment(served, tmp_path, monkeypatch):
    monkeypatch.setenv("UA_DOWNLOAD_DIR", str(tmp_path / "env-dl"))
    c = load_cache(served.url + "tiny-a")
    root = os.path.dirname(c.files.folder)
    assert os.path.dirname(root) == str(tmp_path / "env-dl") and os.path.basename(c.files.folder) == "tiny-a"
    with open(os.path.join(root, "url.txt")) as f:
        assert f.read() == served.url + "\n"  # the root URL: its model folders sit beside url.txt


def test_an_empty_download_dir_variable_counts_as_unset(served, tmp_path, monkeypatch):
    monkeypatch.setenv("UA_DOWNLOAD_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    c = load_cache(served.url + "tiny-a")
    assert c.files.folder.startswith(str(tmp_path / "home" / ".cache" / "ua-scaling" / "downloads") + os.sep)


def test_a_stalled_server_ends_the_call_naming_the_url_and_the_next_call_resumes(served, tmp_path, monkeypatch):
    monkeypatch.setenv(STALL_ENV, "1")
    dl = str(tmp_path / "dl")
    served.stalls["/tiny-a/manifest.json"] = 1  # the headers and one byte, then nothing
    t = time.monotonic()
    with pytest.raises(CacheError, match=rf"^{served.url}tiny-a/manifest\.json: stalled: the server sent no byte for "
                                         rf"1 s; call again to retry \({STALL_ENV} sets the limit\)$"):
        load_cache(served.url + "tiny-a", cache_dir=dl)
    served.stalls["/tiny-a/statements.parquet"] = 100
    with pytest.raises(CacheError, match=r"tiny-a/statements\.parquet: stalled: the server sent no byte for 1 s after "
                                         r"100 of 10749 bytes; call again to resume from .*statements\.parquet\.part "):
        load_cache(served.url + "tiny-a", cache_dir=dl)
    assert time.monotonic() - t < 15, "each stall ends after about the limit"
    assert len(load_cache(served.url + "tiny-a", cache_dir=dl).statements) == 140
    assert served.log[-1] == ("/tiny-a/statements.parquet", "bytes=100-")
    assert [p for p, _ in served.log].count("/tiny-a/statements.parquet") == 2, "a stall is not retried at once"


def test_a_slow_but_moving_download_is_not_cut(served, tmp_path, monkeypatch):
    monkeypatch.setenv(STALL_ENV, "1")
    served.trickles["/tiny-a/statements.parquet"] = (2000, 0.4)  # 10749 bytes in about 2.4 s
    c = load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl"))
    assert len(c.statements) == 140
    assert [p for p, _ in served.log].count("/tiny-a/statements.parquet") == 1


def test_a_bad_stall_limit_is_refused(served, tmp_path, monkeypatch):
    monkeypatch.setenv(STALL_ENV, "soon")
    with pytest.raises(CacheError, match=rf"^{STALL_ENV}=soon: not a number of seconds above 0"):
        load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl"))


def test_a_longer_file_is_refused_at_its_first_response(served, tmp_path):
    with open(os.path.join(served.root, "tiny-a", "statements.parquet"), "ab") as f:
        f.write(b"x" * 100_000)
    with pytest.raises(CacheError, match=r"statements\.parquet: the server's file is 110749 bytes, but manifest\.json "
                                         r"says 10749: .*; refused$"):
        load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl"))
    assert [p for p, _ in served.log].count("/tiny-a/statements.parquet") == 1, "no retry"


def test_an_unfinished_cache_on_the_server_is_refused_before_any_data_file(served, tmp_path):
    edit_manifest(os.path.join(served.root, "tiny-b"), lambda m: m.update(complete=False))
    with pytest.raises(CacheError, match=r"tiny-b/manifest\.json: complete: false: .*the cache on the server is "
                                         r"unfinished; nothing else fetched"):
        load_cache(served.url + "tiny-b", cache_dir=str(tmp_path / "dl"))
    assert [p for p, _ in served.log] == ["/tiny-b/manifest.json"]


def test_https_against_a_plain_http_server_says_so(served, tmp_path):
    url = served.url.replace("http://", "https://") + "tiny-a"
    with pytest.raises(CacheError, match=r"manifest\.json: the server does not answer in TLS \(a plain-HTTP "
                                         r"server\?\); use http:// for it$"):
        load_cache(url, cache_dir=str(tmp_path / "dl"))


def test_a_stale_part_of_the_right_length_is_checked_not_taken(served, tmp_path):
    c = load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl"))
    dest = os.path.join(c.files.folder, "statements.parquet")
    size = os.path.getsize(dest)
    os.remove(dest)
    with open(dest + ".part", "wb") as f:
        f.write(b"\0" * size)
    n = len(served.log)
    assert load_cache(served.url + "tiny-a", cache_dir=str(tmp_path / "dl")).statements.equals(c.statements)
    assert served.log[n:] == [("/tiny-a/manifest.json", None), ("/tiny-a/statements.parquet", None)]


@pytest.mark.parametrize("tail", ["..", "tiny-a/%2e%2e", "tiny-a/.", "a%2Fb"])
def test_a_url_that_is_no_model_folder_is_refused_before_any_request(served, tmp_path, tail):
    with pytest.raises(CacheError, match="is not a model folder's name"):
        load_cache(served.url + tail, cache_dir=str(tmp_path / "dl"))
    assert served.log == [] and not os.path.exists(tmp_path / "dl")


# ---- hf:// (mapping only: nothing here reaches the Hub) ----

@pytest.mark.parametrize("url, https", [
    ("hf://datasets/org/caches/pythia-410m",
     "https://huggingface.co/datasets/org/caches/resolve/main/pythia-410m/"),
    ("hf://datasets/org/caches@v2/grid/pythia-410m/",
     "https://huggingface.co/datasets/org/caches/resolve/v2/grid/pythia-410m/"),
    ("hf://datasets/org/caches@refs%2Fpr%2F3/m", "https://huggingface.co/datasets/org/caches/resolve/refs%2Fpr%2F3/m/"),
    ("hf://datasets/org/caches", "https://huggingface.co/datasets/org/caches/resolve/main/"),
])
def test_hf_urls_map_to_the_hubs_file_urls(url, https):
    assert hf_to_https(url) == https
    assert folder_url(url) == https


@pytest.mark.parametrize("url", ["hf://models/org/name/x", "hf://datasets/org", "hf://datasets/org/@v1/x"])
def test_hf_urls_that_are_no_dataset_are_refused(url):
    with pytest.raises(CacheError, match="not a Hub dataset URL"):
        hf_to_https(url)


def test_https_folder_url_gets_its_slash():
    assert folder_url("https://host/caches/pythia-410m") == "https://host/caches/pythia-410m/"
    assert folder_url("https://host/caches/pythia-410m/") == "https://host/caches/pythia-410m/"
