"""Reading an extract cache (statements.parquet, embeddings.parquet) back into numpy."""
import os


class CacheError(ValueError):
    """A cache that breaks the contract (schemas/CONTRACT.md)."""


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
    embs = {}
    for layer in range(pf.num_row_groups) if layers is None else layers:
        t = pf.read_row_group(layer, columns=["statement_id", "layer", pooling])
        lay = np.asarray(t.column("layer").to_numpy())
        if not (lay == layer).all():  # the contract says row group i is layer i; check
            raise CacheError(f"embeddings.parquet row group {layer} holds layers {sorted(set(lay.tolist()))}")
        ids = np.asarray(t.column("statement_id").to_numpy())
        vals = t.column(pooling).combine_chunks().flatten().to_numpy().reshape(len(ids), -1)
        embs[layer] = vals[np.argsort(ids)].astype(np.float32)
    return nll, texts, embs
