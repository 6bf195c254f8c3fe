"""Reading an extract cache (statements.parquet, embeddings.parquet) back into numpy."""
import os

from uatools.files import read_json


class CacheError(ValueError):
    """A cache that breaks the contract (schemas/CONTRACT.md)."""


def model_order(cache_dir: str, name: str) -> tuple:
    """The key analyze orders model folders by: the parameter count (model.n_parameters, else
    n_layers * hidden_size^2 stands in), then the folder name."""
    m = read_json(os.path.join(cache_dir, name, "manifest.json"))["model"]
    params = m.get("n_parameters") or m["n_layers"] * m["hidden_size"] ** 2
    return (params, name)


def read_layer(pf, layer: int, pooling: str):
    """float32 [n, hidden] of one pooling from row group `layer` of an open embeddings.parquet
    (pyarrow ParquetFile), rows in statement_id order. Refuses a row group that holds another layer."""
    import numpy as np

    t = pf.read_row_group(layer, columns=["statement_id", "layer", pooling])
    lay = np.asarray(t.column("layer").to_numpy())
    if not (lay == layer).all():  # the contract says row group i is layer i; check
        raise CacheError(f"embeddings.parquet row group {layer} holds layers {sorted(set(lay.tolist()))}")
    ids = np.asarray(t.column("statement_id").to_numpy())
    vals = t.column(pooling).combine_chunks().flatten().to_numpy().reshape(len(ids), -1)
    return vals[np.argsort(ids)].astype(np.float32)


def read_cache(cache_dir: str, layers=None, pooling: str = "mean_skip_first"):
    """(nll float64 [n], texts [n], {layer: float32 [n, hidden]}), rows in statement_id order.

    layers: the layers to read (row group i holds layer i); None reads every row group.
    """
    import numpy as np
    import pyarrow.parquet as pq

    st = pq.read_table(os.path.join(cache_dir, "statements.parquet")).to_pydict()
    order = np.argsort(np.asarray(st["statement_id"]))
    nll = np.asarray(st["nll_mean"], dtype=np.float64)[order]
    texts = [st["text"][i] for i in order]
    pf = pq.ParquetFile(os.path.join(cache_dir, "embeddings.parquet"))
    layers = range(pf.num_row_groups) if layers is None else layers
    return nll, texts, {layer: read_layer(pf, layer, pooling) for layer in layers}
