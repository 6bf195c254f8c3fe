"""The seed notebook's analysis code (pythia_scaling_notebook, sections 2, 5 and 6),
transcribed verbatim, run on a Parquet cache written by `extract` instead of on live
transformers outputs.

Only the data source changes: embeddings come from embeddings.parquet (pooling
`mean_skip_first` is the seed's `[0, 1:, :].mean(0)`), preferences are
NLL(B) - NLL(A) from statements.parquet's nll_mean, layers are sampled as the seed
does (range(0, n_layers + 1, step) plus the last). Models are ordered by manifest
n_parameters (fallback n_layers * hidden_size^2), as analyze does.

Arithmetic. By default (`--arithmetic seed`) the embeddings stay float32, as the
notebook's `hidden_states[...].float().cpu().numpy()` are, and `uniformity_score`
runs on them verbatim: float32 norms, kernel and mean. `--arithmetic exact` is NOT
the notebook: it casts the embeddings to float64 first, the float64 reference for
`analyze --arithmetic exact`.

usage: seed_analysis.py --cache CACHE [--layer-step 4] [--pooling mean_skip_first]
                        [--arithmetic seed|exact] [--models a,b] [--out seed.json]
Writes the seed's saved-JSON shape (models, summary, peak_analysis) and prints
the time spent in the seed's numpy/scipy statistics.
"""
import argparse
import json
import os
import sys
import time
from datetime import datetime

import numpy as np
import pyarrow.parquet as pq

from uatools.cache import model_order
from uatools.files import read_json
from uatools.seed.notebook import layer_correlations, peak_analysis


def load_model(model_dir, layer_step, pooling, dtype):
    """Builds the seed's all_embeddings_a/b, all_preferences and category_indices."""
    manifest = read_json(os.path.join(model_dir, "manifest.json"))
    n_layers = manifest["model"]["n_layers"]
    st = pq.read_table(os.path.join(model_dir, "statements.parquet")).to_pydict()
    rows = {}
    for i, sid in enumerate(st["statement_id"]):
        rows[(st["category"][i], st["pair_index"][i], st["side"][i])] = i
    dataset_order = []  # (category, row_a, row_b) in dataset order
    for cat in manifest["dataset"]["categories"]:
        pis = sorted({k[1] for k in rows if k[0] == cat})
        for pi in pis:
            dataset_order.append((cat, rows[(cat, pi, "A")], rows[(cat, pi, "B")]))
    row_of_id = {sid: i for i, sid in enumerate(st["statement_id"])}

    layer_indices = list(range(0, n_layers + 1, layer_step))
    if n_layers not in layer_indices:
        layer_indices.append(n_layers)

    pf = pq.ParquetFile(os.path.join(model_dir, "embeddings.parquet"))
    hidden = manifest["model"]["hidden_size"]
    all_embeddings_a, all_embeddings_b = {}, {}
    for layer_idx in layer_indices:
        t = pf.read_row_group(layer_idx, columns=["statement_id", "layer", pooling])
        assert all(v == layer_idx for v in t.column("layer").to_pylist())
        vals = t.column(pooling).combine_chunks().flatten().to_numpy().reshape(-1, hidden).astype(dtype)
        ids = t.column("statement_id").to_numpy()
        by_row = np.empty_like(vals)
        by_row[[row_of_id[int(s)] for s in ids]] = vals
        key = f"layer_{layer_idx}"
        all_embeddings_a[key] = [by_row[a] for (_, a, _) in dataset_order]
        all_embeddings_b[key] = [by_row[b] for (_, _, b) in dataset_order]
    nll = st["nll_mean"]
    all_preferences = [nll[b] - nll[a] for (_, a, b) in dataset_order]
    category_indices = [c for (c, _, _) in dataset_order]
    dataset = {c: None for c in manifest["dataset"]["categories"]}
    return manifest, n_layers, all_embeddings_a, all_embeddings_b, all_preferences, category_indices, dataset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--layer-step", type=int, default=4)
    ap.add_argument("--pooling", default="mean_skip_first")
    ap.add_argument("--arithmetic", choices=["seed", "exact"], default="seed")
    ap.add_argument("--models", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    names = sorted(d for d in os.listdir(args.cache) if os.path.isdir(os.path.join(args.cache, d)) and not d.startswith("."))
    if args.models:
        names = args.models.split(",")
    names.sort(key=lambda name: model_order(args.cache, name))
    all_model_results = {}
    t_load = 0.0
    t_stats = 0.0
    for name in names:
        t0 = time.perf_counter()
        manifest, n_layers, ea, eb, prefs, cats, dataset = load_model(os.path.join(args.cache, name), args.layer_step, args.pooling,
                                                                     np.float32 if args.arithmetic == "seed" else np.float64)
        t1 = time.perf_counter()
        results = layer_correlations(dataset, ea, eb, prefs, cats)
        t2 = time.perf_counter()
        t_load += t1 - t0
        t_stats += t2 - t1
        all_model_results[manifest["model"]["display_name"]] = {
            "model_name": manifest["model"]["id"],
            "n_layers": int(n_layers),
            "layer_results": {str(k): v for k, v in results.items()},
        }
    t3 = time.perf_counter()
    summary_data, peak_mean, peak_std, peaks_stable = peak_analysis(all_model_results)
    t_stats += time.perf_counter() - t3
    save_data = {
        'timestamp': datetime.now().isoformat(),
        'research_question': 'Does the layer correlation peak shift with model size?',
        'models': all_model_results,
        'summary': summary_data,
        'peak_analysis': {
            'mean_peak_pct': float(peak_mean),
            'std_peak_pct': float(peak_std),
            'peaks_stable': bool(peaks_stable)
        },
        'seconds': {'read_parquet': t_load, 'seed_statistics': t_stats},
    }
    text = json.dumps(save_data, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    sys.stderr.write(f"seed numpy code: read {t_load:.2f} s, statistics {t_stats:.2f} s\n")
