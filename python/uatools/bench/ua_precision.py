"""UA per category from a cache's embeddings in extended precision, against analyze's.

analyze computes a category's UA from its Gram blocks, or from its vectors when it has
more pairs than dimensions (schemas/CONTRACT.md), and in the centred geometry from the
raw blocks and each statement's norm and dot product with the layer's sum
(schemas/src/geometry.rs). On trained models the cosines sit near 1 and UA is a small
difference of two numbers near 1, and centring subtracts numbers that share most of
their magnitude; this says how near each of analyze's numbers is to the value computed
in numpy's longdouble (80-bit on x86-64) from the same float32 vectors, the geometry's
transform (centre on the mean over all statements; standardise each dimension)
applied in longdouble too.

usage: scripts/ua-precision [--geometry raw|centred|standardised] CACHE_DIR LAYER RESULTS_JSON [...]
(each results.json from `analyze` on that cache, holding that geometry; the first model
and pooling mean_skip_first)
"""
from __future__ import annotations

import argparse

import numpy as np
import pyarrow.parquet as pq

from uatools.files import read_json

GEOMETRIES = ("raw", "centred", "standardised")


def uniformity(vectors: dict[int, np.ndarray], ids: list[int]) -> np.longdouble:
    """Mean pairwise cosine of the seed's normalised vectors, in longdouble."""
    x = np.stack([vectors[i] for i in ids]).astype(np.longdouble)
    x = x / (np.sqrt((x * x).sum(axis=1)) + np.longdouble(1e-10))[:, None]
    s = x.sum(axis=0)
    pairs = len(ids) * (len(ids) - 1) / 2
    return ((s * s).sum() - (x * x).sum()) / 2 / pairs


def transformed(vectors: dict[int, np.ndarray], geometry: str) -> dict[int, np.ndarray]:
    """Every statement's vector in `geometry`, in longdouble: minus the mean over all
    statements (centred), then divided by each dimension's population std (standardised;
    a constant dimension becomes 0, as analyze does)."""
    if geometry == "raw":
        return vectors
    ids = sorted(vectors)
    x = np.stack([vectors[i] for i in ids]).astype(np.longdouble)
    x = x - x.mean(axis=0)
    if geometry == "standardised":
        sd = np.sqrt((x * x).mean(axis=0))
        x = np.where(sd > 0, x / np.where(sd > 0, sd, 1), 0)
    return dict(zip(ids, x))


def reference_ua(cache: str, layer: int, categories: list[str], geometry: str = "raw") -> list[np.longdouble]:
    st = pq.read_table(f"{cache}/statements.parquet").to_pandas()
    emb = pq.read_table(
        f"{cache}/embeddings.parquet",
        filters=[("layer", "=", layer)],
        columns=["statement_id", "mean_skip_first"],
    ).to_pandas()
    vectors = {int(s): np.array(v, dtype=np.float32) for s, v in zip(emb.statement_id, emb.mean_skip_first)}
    vectors = transformed(vectors, geometry)
    out = []
    for cat in categories:
        rows = st[st.category == cat].sort_values("pair_index")
        side = {s: rows[rows.side == s].statement_id.tolist() for s in ("A", "B")}
        out.append(uniformity(vectors, side["A"]) - uniformity(vectors, side["B"]))
    return out


def view(run: dict, geometry: str) -> dict:
    """The results of pooling mean_skip_first in `geometry`."""
    for p in run["poolings"]:
        if p["pooling"] == "mean_skip_first" and p.get("geometry", "raw") == geometry:
            return p
    raise SystemExit(f"a results.json holds no mean_skip_first view in the {geometry} geometry")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--geometry", choices=GEOMETRIES, default="raw")
    ap.add_argument("cache")
    ap.add_argument("layer", type=int)
    ap.add_argument("results", nargs="+")
    a = ap.parse_args(argv)
    runs = [read_json(r) for r in a.results]
    categories = runs[0]["categories"]
    ref = reference_ua(a.cache, a.layer, categories, a.geometry)
    worst = 0.0
    for ci, cat in enumerate(categories):
        errors = []
        for r, run in zip(a.results, runs):
            layers = view(run, a.geometry)["models"][0]["layers"]
            got = next(s for s in layers if s["layer"] == a.layer)["ua"][ci]
            err = float(got - ref[ci])
            worst = max(worst, abs(err) / max(abs(float(ref[ci])), 1e-300))
            errors.append(f"{r}: {err:+.2e}")
        print(f"{cat:26s} UA {float(ref[ci]):+.15e}  error  {'  '.join(errors)}")
    print(f"largest error relative to |UA|: {worst:.2e} ({a.geometry}, layer {a.layer})")
    return 0
