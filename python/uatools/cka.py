"""Linear CKA (Kornblith et al. 2019) computed directly from the features with numpy,
as the reference for analyze's Gram-matrix computation (tests/e2e/cka_exact.rs).

CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), Xc, Yc the column-centred
statements x hidden matrices (float64) of one layer, statements in statement_id order.
Models are ordered as analyze orders them (manifest n_parameters, else
n_layers * hidden_size^2, then folder name); every pair (smaller model first) at every
layer.

usage: cka_reference.py --cache CACHE [--pooling mean_skip_first] --out cka.json
"""
import argparse
import os

import numpy as np
import pyarrow.parquet as pq

from uatools.cache import model_order
from uatools.files import read_json, write_json


def layers_of(model_dir, pooling):
    """Every layer's centred float64 matrix, rows in statement_id order."""
    manifest = read_json(os.path.join(model_dir, "manifest.json"))
    hidden = manifest["model"]["hidden_size"]
    pf = pq.ParquetFile(os.path.join(model_dir, "embeddings.parquet"))
    out = []
    for layer in range(manifest["model"]["n_layers"] + 1):
        t = pf.read_row_group(layer, columns=["statement_id", pooling])
        x = t.column(pooling).combine_chunks().flatten().to_numpy().reshape(-1, hidden).astype(np.float64)
        x = x[np.argsort(t.column("statement_id").to_numpy())]
        out.append(x - x.mean(axis=0))
    return out


def cka(xc, yc):
    return float(np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--pooling", default="mean_skip_first")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    names = sorted((d for d in os.listdir(args.cache)  # the model folders, not the root card README.md
                    if os.path.isdir(os.path.join(args.cache, d)) and not d.startswith(".")),
                   key=lambda name: model_order(args.cache, name))
    layers = {n: layers_of(os.path.join(args.cache, n), args.pooling) for n in names}
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs.append({"model": a, "other": b, "cka": [[cka(x, y) for y in layers[b]] for x in layers[a]]})
    write_json(args.out, {"pairs": pairs})
