"""A cache in a notebook: load_cache(path_or_url) -> statements, one layer at a time, the manifest.

    from uatools.reader import load_cache
    c = load_cache("cache/pythia-410m")          # a folder, https://host/path/MODEL/ or hf://datasets/ORG/NAME/MODEL
    c.statements.head()                          # pandas DataFrame, one row per statement, statement_id order
    x = c.layer(12, "mean_skip_first")           # numpy float32 [n_statements, hidden_size]
    c.manifest["model"]["id"]

The files are checked as analyze checks them (schemas/CONTRACT.md): the manifest must say
`complete: true` with schema_version 1; statements.parquet's size and sha256 must be the
manifest's (at load), and embeddings.parquet's too (at the first layer() call, hashed once);
the dataset card README.md is not checked (people edit cards). Every refusal is a
uatools.cache.CacheError whose message is one line naming the file (or URL) and the problem.
Remote caches are fetched by uatools.remote, only the files asked for.
"""
import hashlib
import operator
import os

from uatools.cache import CacheError, read_layer
from uatools.files import read_json, sha256_file
from uatools.remote import fetch_file, fetch_manifest, folder_url, is_url, local_folder

STATEMENTS = "statements.parquet"
EMBEDDINGS = "embeddings.parquet"


class LocalFiles:
    """A cache folder on this machine: a data file is checked where it lies."""

    def __init__(self, folder: str):
        self.folder = folder

    def where(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def get(self, name: str, entry: dict) -> str:
        path = self.where(name)
        if not os.path.isfile(path):
            raise CacheError(f"{path}: missing, but manifest.json lists it")
        size = os.path.getsize(path)
        if size != entry["bytes"]:
            raise CacheError(f"{path}: {size} bytes, but manifest.json says {entry['bytes']}: "
                             "the file was changed, truncated or is another cache's; refused")
        got = sha256_file(path)
        if got != entry["sha256"]:
            raise CacheError(f"{path}: sha256 {got}, but manifest.json says {entry['sha256']}: "
                             "the file was changed or is another cache's; refused")
        return path


class RemoteFiles:
    """A cache folder behind a URL: a data file is downloaded (and checked) into the download dir."""

    def __init__(self, base_url: str, ddir: str):
        self.base_url, self.folder = base_url, ddir

    def where(self, name: str) -> str:
        return self.base_url + name

    def get(self, name: str, entry: dict) -> str:
        return fetch_file(self.base_url, self.folder, name, entry)


def check_manifest(m, where: str, remote: bool = False) -> None:
    """Refuse a manifest that analyze would refuse before it reads any data file."""
    if not isinstance(m, dict):
        raise CacheError(f"{where}: not a JSON object")
    if m.get("schema_version") != 1:
        raise CacheError(f"{where}: schema_version {m.get('schema_version')!r}; this reader knows version 1")
    if m.get("complete") is not True:
        fix = ("the cache on the server is unfinished; nothing else fetched: finish it where it is written and "
               "serve it again" if remote else "run extract again to finish the cache")
        raise CacheError(f"{where}: complete: {str(m.get('complete')).lower()}: the extraction has not finished "
                         f"(or was interrupted); {fix}")
    files = m.get("files")
    for name in (STATEMENTS,) + ((EMBEDDINGS,) if isinstance(files, dict) and EMBEDDINGS in files else ()):
        entry = files.get(name) if isinstance(files, dict) else None
        if not isinstance(entry, dict) or not all(k in entry for k in ("rows", "bytes", "sha256")):
            raise CacheError(f"{where}: files.{name} missing or without rows, bytes and sha256")
    model, run, dataset = m.get("model") or {}, m.get("run") or {}, m.get("dataset") or {}
    counts = (("model.n_layers", model.get("n_layers")), ("model.hidden_size", model.get("hidden_size")),
              ("dataset.n_statements", dataset.get("n_statements")))
    if "shard" in run:
        counts += (("run.shard.n_statements", (run["shard"] or {}).get("n_statements")),)
    for key, value in counts:
        if not isinstance(value, int) or value < 0:
            raise CacheError(f"{where}: {key} missing or not a count")
    if not isinstance(run.get("poolings"), list) or not run["poolings"]:
        raise CacheError(f"{where}: run.poolings missing or empty")


def statements_digest(ids, texts) -> str:
    """sha256 over "{statement_id}\\t{text}\\n" in id order: the manifest's dataset.statements_sha256."""
    h = hashlib.sha256()
    for i, t in zip(ids, texts):
        h.update(f"{i}\t{t}\n".encode())
    return h.hexdigest()


def read_statements(path: str, where: str, manifest: dict, n_statements: int):
    """statements.parquet as a pandas DataFrame in statement_id order, its rows and texts checked."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad footer
        raise CacheError(f"{where}: not a readable Parquet file: {e}") from None
    missing = [c for c in ("statement_id", "text") if c not in table.column_names]
    if missing:
        raise CacheError(f"{where}: no column {', '.join(missing)}")
    if table.num_rows != n_statements:
        raise CacheError(f"{where}: {table.num_rows} rows, but manifest.json says {n_statements} statements")
    df = table.to_pandas()
    if not df["statement_id"].is_monotonic_increasing:
        df = df.sort_values("statement_id", kind="stable").reset_index(drop=True)
    expected = (manifest.get("dataset") or {}).get("statements_sha256")
    if expected and "shard" not in (manifest.get("run") or {}):  # a shard's digest describes the whole dataset
        got = statements_digest(df["statement_id"].tolist(), df["text"].tolist())
        if got != expected:
            raise CacheError(f"{where}: statement ids and texts hash to {got}, but manifest.json's "
                             f"dataset.statements_sha256 is {expected}: another dataset's statements; refused")
    return df


def load_cache(path_or_url, cache_dir=None) -> "Cache":
    """One cache folder (a local path, https://host/path/MODEL/ or hf://datasets/ORG/NAME[@REVISION]/path).

    cache_dir: where remote files are downloaded (default $UA_DOWNLOAD_DIR, else
    ~/.cache/ua-scaling/downloads; the folder analyze --cache URL uses, so neither fetches a file
    the other has); ignored for a local folder.
    """
    source = os.fspath(path_or_url)
    if is_url(source):
        base = folder_url(source)
        files = RemoteFiles(base, local_folder(base, cache_dir))
        manifest_path = fetch_manifest(base, files.folder)
    else:
        files = LocalFiles(source)
        manifest_path = files.where("manifest.json")
        if not os.path.isfile(manifest_path):
            raise CacheError(f"{manifest_path}: missing: not a cache folder, or extract has not started")
    where = files.where("manifest.json")
    try:
        manifest = read_json(manifest_path)
    except ValueError as e:
        raise CacheError(f"{where}: not valid JSON: {e}") from None
    check_manifest(manifest, where, remote=is_url(source))
    return Cache(source, manifest, files)


class Cache:
    """An opened cache: .manifest, .statements (loaded and checked), .layer(l, pooling) (read on demand)."""

    def __init__(self, source: str, manifest: dict, files):
        self.source, self.manifest, self.files = source, manifest, files
        model, run = manifest["model"], manifest["run"]
        self.n_layers = model["n_layers"]  # transformer blocks L: the cache holds layers 0..L
        self.hidden_size = model["hidden_size"]
        self.poolings = list(run["poolings"])
        shard = run.get("shard")
        self.n_statements = shard["n_statements"] if shard else manifest["dataset"]["n_statements"]
        self.sidecar_only = EMBEDDINGS not in manifest["files"]
        entry = manifest["files"][STATEMENTS]
        where = files.where(STATEMENTS)
        if entry["rows"] != self.n_statements:
            raise CacheError(f"{files.where('manifest.json')}: files.{STATEMENTS}.rows is {entry['rows']}, "
                             f"but the cache has {self.n_statements} statements")
        self.statements = read_statements(files.get(STATEMENTS, entry), where, manifest, self.n_statements)
        self._embeddings = None  # the opened embeddings.parquet, once its sha256 was checked

    @property
    def compact_only(self) -> bool:
        """The old name of .sidecar_only, kept so that old scripts keep working."""
        return self.sidecar_only

    @property
    def layers(self) -> range:
        """The layer indices the cache holds: 0 (token embeddings) to n_layers (after the final norm)."""
        return range(self.n_layers + 1)

    def __repr__(self) -> str:
        kind = "sidecar-only" if self.sidecar_only else f"poolings {', '.join(self.poolings)}"
        return (f"Cache({self.source!r}: {self.manifest['model'].get('id')}, {self.n_statements} statements, "
                f"layers 0..{self.n_layers}, hidden {self.hidden_size}, {kind})")

    def embeddings_file(self):
        """embeddings.parquet opened (pyarrow ParquetFile) after its size and sha256 were checked, once."""
        if self._embeddings is None:
            import pyarrow.parquet as pq

            where = self.files.where(EMBEDDINGS)
            path = self.files.get(EMBEDDINGS, self.manifest["files"][EMBEDDINGS])
            pf = pq.ParquetFile(path)
            if pf.num_row_groups != self.n_layers + 1:
                raise CacheError(f"{where}: {pf.num_row_groups} row groups, but the cache has "
                                 f"{self.n_layers + 1} layers (one row group per layer)")
            missing = [p for p in self.poolings if p not in pf.schema_arrow.names]
            if missing:
                raise CacheError(f"{where}: no column {', '.join(missing)}, but run.poolings lists it")
            self._embeddings = pf
        return self._embeddings

    def layer(self, layer: int, pooling: str):
        """numpy float32 [n_statements, hidden_size]: one pooling at one layer, rows in statement_id
        order (those of .statements). Reads row group `layer` of embeddings.parquet only."""
        where = self.files.where(EMBEDDINGS)
        if self.sidecar_only:
            raise CacheError(f"{self.files.where('manifest.json')}: a sidecar-only cache: it has no "
                             f"{EMBEDDINGS} (only the Gram blocks in grams.parquet), so no layer can be read")
        if pooling not in self.poolings:
            raise CacheError(f"{where}: no pooling {pooling!r}; this cache has {', '.join(self.poolings)}")
        try:
            index = operator.index(layer)
        except TypeError:
            raise CacheError(f"{where}: layer {layer!r} is not an integer") from None
        if isinstance(layer, bool) or not 0 <= index <= self.n_layers:
            raise CacheError(f"{where}: layer {layer!r} out of range: this cache holds layers 0..{self.n_layers}")
        pf = self.embeddings_file()
        try:
            x = read_layer(pf, index, pooling)
        except CacheError as e:  # a row group that holds another layer
            raise CacheError(f"{where}: {e}") from None
        if x.shape != (self.n_statements, self.hidden_size):
            raise CacheError(f"{where}: layer {index} has shape {x.shape}, but the manifest says "
                             f"({self.n_statements}, {self.hidden_size})")
        return x
