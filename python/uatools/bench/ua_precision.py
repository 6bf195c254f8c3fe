"""UA per category from a cache's embeddings in extended precision, against analyze's.

analyze computes a category's UA from its Gram blocks, or from its vectors when it has
more pairs than dimensions (schemas/CONTRACT.md). On trained models the cosines sit near
1 and UA is a small difference of two numbers near 1, so the two float64 forms differ in
their last digits; this says which is nearer the value computed in numpy's longdouble
(80-bit on x86-64) from the same float32 vectors.

usage: scripts/ua-precision CACHE_DIR LAYER RESULTS_JSON [RESULTS_JSON ...]
(each results.json from `analyze` on that cache, the first model and pooling mean_skip_first)
"""
from __future__ import annotations

import sys

import numpy as np
import pyarrow.parquet as pq

from uatools.files import read_json


def uniformity(vectors: dict[int, np.ndarray], ids: list[int]) -> np.longdouble:
    """Mean pairwise cosine of the seed's normalised vectors, in longdouble."""
    x = np.stack([vectors[i] for i in ids]).astype(np.longdouble)
    x = x / (np.sqrt((x * x).sum(axis=1)) + np.longdouble(1e-10))[:, None]
    s = x.sum(axis=0)
    pairs = len(ids) * (len(ids) - 1) / 2
    return ((s * s).sum() - (x * x).sum()) / 2 / pairs


def reference_ua(cache: str, layer: int, categories: list[str]) -> list[np.longdouble]:
    st = pq.read_table(f"{cache}/statements.parquet").to_pandas()
    emb = pq.read_table(
        f"{cache}/embeddings.parquet",
        filters=[("layer", "=", layer)],
        columns=["statement_id", "mean_skip_first"],
    ).to_pandas()
    vectors = {int(s): np.array(v, dtype=np.float32) for s, v in zip(emb.statement_id, emb.mean_skip_first)}
    out = []
    for cat in categories:
        rows = st[st.category == cat].sort_values("pair_index")
        side = {s: rows[rows.side == s].statement_id.tolist() for s in ("A", "B")}
        out.append(uniformity(vectors, side["A"]) - uniformity(vectors, side["B"]))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    cache, layer, results = args[0], int(args[1]), args[2:]
    runs = [read_json(r) for r in results]
    categories = runs[0]["categories"]
    ref = reference_ua(cache, layer, categories)
    for ci, cat in enumerate(categories):
        errors = "  ".join(
            f"{r}: {float(run['poolings'][0]['models'][0]['layers'][layer]['ua'][ci] - ref[ci]):+.2e}"
            for r, run in zip(results, runs)
        )
        print(f"{cat:26s} UA {float(ref[ci]):+.15e}  error  {errors}")
    return 0
