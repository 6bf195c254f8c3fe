"""Recomputes the seed's functions with transformers and compares them with a cache.

For a model cache written by extract and the Hugging Face checkpoint it came from
(a directory with config.json and model.safetensors, e.g. a fixture in tests/fixtures),
runs the seed's get_layer_embeddings (every layer) and get_nll on every --every-th
statement of the cache, batch 1, float32 on the CPU, and compares the cached
mean_skip_first embeddings and nll_mean with the one parity rule (scripts/parity.py):
each pooled vector's error relative to its own scale, the NLL's relative to max(1, |nll|),
both within bound(dtype) (the cache's dtype, from its manifest; float32 if absent). Prints
the worst errors as values and as a fraction of the bound, and the worst layer. Exits 1
when either exceeds --factor x the bound.

  scripts/check-parity --model tests/fixtures/tiny-c --cache out/demo/cache/tiny-c
"""
import argparse
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq

from uatools import parity


def cache_dtype(cache: str) -> str:
    try:
        with open(os.path.join(cache, "manifest.json"), encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError):
        return "float32"
    for keys in (("dtype",), ("model", "dtype"), ("export", "dtype"), ("run", "dtype")):
        v = m
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if v in parity.UNIT_ROUNDOFF:
            return v
    return "float32"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF checkpoint dir (config.json, model.safetensors)")
    ap.add_argument("--cache", required=True, help="one model's cache dir (manifest.json, *.parquet)")
    ap.add_argument("--every", type=int, default=1, help="check every Nth statement (default: all)")
    ap.add_argument("--factor", type=float, default=1.0,
                    help="fail above this multiple of the parity bound (default 1: the rule itself)")
    ap.add_argument("--dtype", choices=sorted(parity.UNIT_ROUNDOFF), default=None,
                    help="dtype whose bound applies (default: the cache manifest's, else float32)")
    args = ap.parse_args()
    for f in ("statements.parquet", "embeddings.parquet"):
        if not os.path.isfile(os.path.join(args.cache, f)):
            sys.exit(f"check-parity: {os.path.join(args.cache, f)}: missing (not a cache written by extract)")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from uatools.seed import reference as seedref

    dtype = args.dtype or cache_dtype(args.cache)
    bound = parity.bound(dtype)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    st = pq.read_table(os.path.join(args.cache, "statements.parquet")).to_pydict()
    emb = pq.read_table(os.path.join(args.cache, "embeddings.parquet"),
                        columns=["statement_id", "layer", "mean_skip_first"]).to_pydict()
    n = len(st["text"])
    n_layers = max(emb["layer"]) + 1
    # The contract: row group l holds layer l, rows ordered by statement_id.
    cached = np.asarray(emb["mean_skip_first"], dtype=np.float32).reshape(n_layers, n, -1)

    per_layer = np.zeros(n_layers)
    max_abs = max_nll = max_nll_abs = 0.0
    checked = range(0, n, args.every)
    for i in checked:
        ref = seedref.get_layer_embeddings(st["text"][i], model, tok, layer_step=1)
        for layer in range(n_layers):
            r = ref[f"layer_{layer}"]
            per_layer[layer] = max(per_layer[layer], parity.vector_error(cached[layer, i], r)[0])
            max_abs = max(max_abs, float(np.abs(cached[layer, i].astype(np.float64) - r).max()))
        nll = seedref.get_nll(st["text"][i], model, tok)
        max_nll = max(max_nll, parity.nll_error(st["nll_mean"][i], nll))
        max_nll_abs = max(max_nll_abs, abs(st["nll_mean"][i] - nll))
    max_emb = float(per_layer.max())
    worst = int(per_layer.argmax())
    print(f"{args.cache}: {len(checked)} statements x {n_layers} layers; parity bound ({dtype}) {bound:.3g}")
    print(f"  mean_skip_first: worst error {max_emb:.3g} = {max_emb / bound:.3f} of the bound (layer {worst}); "
          f"max |diff| {max_abs:.2e}")
    print(f"  nll_mean:        worst error {max_nll:.3g} = {max_nll / bound:.3f} of the bound; "
          f"max |diff| {max_nll_abs:.2e}")
    limit = args.factor * bound
    ok = max_emb <= limit and max_nll <= limit
    if not ok:
        print(f"  FAILED: above {args.factor:g} x the bound")
    return 0 if ok else 1
