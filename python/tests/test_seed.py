"""The seed's functions (uatools.seed) on small hand-computed cases."""
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uatools.cache import CacheError, read_cache
from uatools.seed.dataset import DatasetError, iter_statements, statement_texts
from uatools.seed.notebook import layer_correlations, peak_analysis, uniformity_score


def test_uniformity_score_is_the_mean_pairwise_cosine():
    # cos(e1, e2) = 0, cos(e1, e1 + e2) = cos(e2, e1 + e2) = 1/sqrt(2): mean sqrt(2) / 3
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert uniformity_score(emb) == pytest.approx(math.sqrt(2) / 3, abs=1e-9)


def test_uniformity_score_ignores_length_and_sees_direction():
    assert uniformity_score(np.array([[1.0, 2.0], [3.0, 6.0]])) == pytest.approx(1.0, abs=1e-9)
    assert uniformity_score(np.array([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-1.0, abs=1e-9)


def test_uniformity_score_keeps_float32_as_the_notebook_does():
    emb = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    assert uniformity_score(emb) == pytest.approx(0.6, abs=1e-6)


def test_ua_difference_drives_layer_correlations():
    # Three categories, one layer. UA(category) = uniformity(A) - uniformity(B):
    #   c1: A parallel (1), B orthogonal (0)  -> UA 1
    #   c2: A at 60 degrees (0.5), B orthogonal -> UA 0.5
    #   c3: A orthogonal, B parallel           -> UA -1
    # Preferences (mean per category) 3, 1, -1: deviations from the means (1/6 and 1) are
    # (5/6, 1/3, -7/6) and (2, 0, -2), so r = 4 / sqrt(13/6 * 8) = 0.96076892283052.
    par = [np.array([1.0, 0.0]), np.array([2.0, 0.0])]
    orth = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    sixty = [np.array([1.0, 0.0]), np.array([0.5, math.sqrt(3) / 2])]
    emb_a = {"layer_0": par + sixty + orth}
    emb_b = {"layer_0": orth + orth + par}
    prefs = [3.0, 3.0, 1.0, 1.0, -1.0, -1.0]
    cats = ["c1", "c1", "c2", "c2", "c3", "c3"]
    res = layer_correlations({"c1": None, "c2": None, "c3": None}, emb_a, emb_b, prefs, cats)
    assert res[0]["correlation"] == pytest.approx(4 / math.sqrt(13 / 6 * 8), abs=1e-9)
    assert res[0]["correlation"] == pytest.approx(0.96076892283052, abs=1e-9)


def test_peak_analysis_positions_and_sign_changes():
    results = {"m": {"n_layers": 8, "layer_results": {
        "0": {"correlation": -0.2}, "4": {"correlation": 0.6}, "8": {"correlation": 0.1}}}}
    summary, mean, std, stable = peak_analysis(results)
    s = summary[0]
    assert (s["max_pos_layer"], s["max_pos_pct"], s["max_neg_layer"], s["final_r"]) == (4, 50.0, 0, 0.1)
    assert s["sign_changes"] == [{"layer_before": 0, "layer_after": 4, "midpoint_pct": 25.0}]
    assert (mean, std, stable) == (50.0, 0.0, True)


def test_iter_statements_seed_order():
    ds = {"b": {"pairs": [["b1", "b2"]]}, "a": {"pairs": [["a1", "a2"], ["a3", "a4"]]}}
    got = [(s.category, s.pair_index, s.side, s.text) for s in iter_statements(ds)]
    assert got == [("b", 0, "A", "b1"), ("b", 0, "B", "b2"), ("a", 0, "A", "a1"), ("a", 0, "B", "a2"),
                   ("a", 1, "A", "a3"), ("a", 1, "B", "a4")]


def test_statement_texts(tmp_path):
    good = tmp_path / "d.json"
    good.write_text('{"x": {"pairs": [["p", "q"]]}}')
    assert statement_texts(str(good)) == ["p", "q"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": {"pairs": [["p", 3]]}}')
    with pytest.raises(DatasetError, match="non-string"):
        statement_texts(str(bad))


def write_cache(path, layers_ok=True):
    """A two-layer cache written out of statement_id order, as a chunked extract may write it."""
    path.mkdir()
    pq.write_table(pa.table({"statement_id": [1, 0], "text": ["second", "first"], "nll_mean": [2.5, 1.5]}),
                   path / "statements.parquet")
    vec = pa.list_(pa.float32(), 2)
    tables = [pa.table({"statement_id": pa.array([1, 0], pa.int64()),
                        "layer": pa.array([g if layers_ok else 0] * 2, pa.int32()),
                        "mean_skip_first": pa.array([[g + 0.5, 1.0], [g + 0.0, 0.0]], vec)}) for g in range(2)]
    with pq.ParquetWriter(path / "embeddings.parquet", tables[0].schema) as w:
        for t in tables:
            w.write_table(t)


def test_read_cache_orders_rows_by_statement_id(tmp_path):
    write_cache(tmp_path / "c")
    nll, texts, embs = read_cache(str(tmp_path / "c"))
    assert texts == ["first", "second"]
    assert nll.tolist() == [1.5, 2.5]
    assert sorted(embs) == [0, 1]
    assert embs[1].tolist() == [[1.0, 0.0], [1.5, 1.0]]
    assert embs[1].dtype == np.float32


def test_read_cache_refuses_a_misplaced_layer(tmp_path):
    write_cache(tmp_path / "c", layers_ok=False)
    with pytest.raises(CacheError, match="row group 1 holds layers \\[0\\]"):
        read_cache(str(tmp_path / "c"), [1])
