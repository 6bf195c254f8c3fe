#!/usr/bin/env python3
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

try:
    import numpy as np
    import pyarrow.parquet as pq
    from scipy import stats
except ImportError as e:  # the Rust test turns this into a failure with advice
    sys.stderr.write(f"seed_analysis.py needs numpy, scipy and pyarrow: {e}. Install them: python3 -m pip install numpy scipy pyarrow\n")
    sys.exit(3)


# ---- verbatim from the seed notebook, section 2 ----
def uniformity_score(embeddings: np.ndarray) -> float:
    """
    Calculate average pairwise cosine similarity (uniformity).
    """
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    normalized = embeddings / (norms + 1e-10)
    kernel = normalized @ normalized.T
    n = kernel.shape[0]
    idx = np.triu_indices(n, k=1)
    return float(np.mean(kernel[idx]))


def load_model(model_dir, layer_step, pooling, dtype):
    """Builds the seed's all_embeddings_a/b, all_preferences and category_indices."""
    manifest = json.load(open(os.path.join(model_dir, "manifest.json")))
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


# ---- verbatim from run_layer_analysis_for_model (the statistics part) ----
def layer_correlations(dataset, all_embeddings_a, all_embeddings_b, all_preferences, category_indices):
    results = {}

    for layer_key in sorted(all_embeddings_a.keys(), key=lambda x: int(x.split('_')[1])):
        embs_a = np.array(all_embeddings_a[layer_key])
        embs_b = np.array(all_embeddings_b[layer_key])

        # Calculate per-category UA
        category_uas = []
        category_prefs = []

        for cat_name in dataset.keys():
            cat_mask = [c == cat_name for c in category_indices]
            cat_embs_a = embs_a[cat_mask]
            cat_embs_b = embs_b[cat_mask]
            cat_prefs = np.array(all_preferences)[cat_mask]

            u_a = uniformity_score(cat_embs_a)
            u_b = uniformity_score(cat_embs_b)
            ua = u_a - u_b

            category_uas.append(ua)
            category_prefs.append(float(np.mean(cat_prefs)))

        # Correlation
        r, p = stats.pearsonr(category_uas, category_prefs)

        layer_num = int(layer_key.split('_')[1])
        results[layer_num] = {
            'correlation': float(r),
            'p_value': float(p)
        }
    return results


# ---- verbatim from section 5 ----
def peak_analysis(all_model_results):
    summary_data = []

    for model_display, data in all_model_results.items():
        layer_results = data["layer_results"]
        n_layers = data["n_layers"]
        layers = sorted([int(k) for k in layer_results.keys()])
        correlations = [layer_results[str(l)]['correlation'] for l in layers]

        # Max positive
        max_pos_r = max(correlations)
        max_pos_layer = layers[correlations.index(max_pos_r)]
        max_pos_pct = max_pos_layer / n_layers * 100

        # Max negative (most negative)
        max_neg_r = min(correlations)
        max_neg_layer = layers[correlations.index(max_neg_r)]
        max_neg_pct = max_neg_layer / n_layers * 100

        # Final layer
        final_layer = max(layers)
        final_r = layer_results[str(final_layer)]['correlation']

        # Find sign changes
        sign_changes = []
        for i in range(len(correlations) - 1):
            if correlations[i] * correlations[i+1] < 0:
                midpoint = (layers[i] + layers[i+1]) / 2
                midpoint_pct = midpoint / n_layers * 100
                sign_changes.append({
                    'layer_before': int(layers[i]),
                    'layer_after': int(layers[i+1]),
                    'midpoint_pct': float(midpoint_pct)
                })

        summary_data.append({
            'model': model_display,
            'n_layers': int(n_layers),
            'max_pos_r': float(max_pos_r),
            'max_pos_layer': int(max_pos_layer),
            'max_pos_pct': float(max_pos_pct),
            'max_neg_r': float(max_neg_r),
            'max_neg_layer': int(max_neg_layer),
            'max_neg_pct': float(max_neg_pct),
            'final_r': float(final_r),
            'sign_changes': sign_changes
        })

    peak_positions = [(s['model'], s['max_pos_pct']) for s in summary_data]
    peak_pcts = [p[1] for p in peak_positions]
    peak_std = float(np.std(peak_pcts))
    peak_mean = float(np.mean(peak_pcts))
    peaks_stable = bool(peak_std < 10)
    return summary_data, peak_mean, peak_std, peaks_stable


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

    def size(name):
        m = json.load(open(os.path.join(args.cache, name, "manifest.json")))["model"]
        return (m.get("n_parameters") or m["n_layers"] * m["hidden_size"] ** 2, name)

    names.sort(key=size)
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


if __name__ == "__main__":
    main()
