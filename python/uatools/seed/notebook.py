"""The seed notebook's analysis functions (pythia_scaling_notebook, sections 2, 5 and 6),
transcribed verbatim: numpy and scipy only, no torch.

`uniformity_score` (section 2), the statistics part of `run_layer_analysis_for_model`
(`layer_correlations`) and the peak summary of section 5 (`peak_analysis`). Used by
tests/seed_analysis.py (uatools.seed.cache_analysis) on extract's caches and by
scripts/gpu-check on the seed loop's own values.
"""
import numpy as np

from uatools.extras import need

stats = need("scipy.stats", "uatools.seed.notebook (the seed's statistics)", "pip install scipy")


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
