"""What the check measures: the weights' cold read, extract's own figures, the parity of a cache
against the seed loop (uatools.parity's rule), overflow scans and r with the seed's formulas."""
import os
import re
import subprocess
import sys
import time

from uatools import parity
from uatools.files import read_json
from uatools.seed.notebook import uniformity_score


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def read_weights(onnx_dir) -> dict:
    files = [os.path.join(onnx_dir, f) for f in sorted(os.listdir(onnx_dir)) if f.startswith("model.onnx")]
    dropped = drop_caches()
    total, t0 = 0, time.perf_counter()
    buf = bytearray(16 << 20)
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                total += n
    s = time.perf_counter() - t0
    return {"files": [os.path.basename(f) for f in files], "bytes": total, "read_s": s,
            "gb_per_s": total / s / 1e9 if s else None, "page_cache_dropped": dropped}


SESSION_RE = re.compile(r"session[^\n]*?([0-9]+(?:\.[0-9]+)?)\s*(ms|s)\b", re.IGNORECASE)
EXTRACTED_RE = re.compile(r"extracted\s+(\d+)\s+statements.*?\((\d+)\s+run now.*?in\s+([0-9.]+)\s*s:\s*"
                          r"([0-9]+(?:\.[0-9]+)?)\s*statements?\s*/\s*s")
RATE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*statements?\s*/\s*s")


def parse_extract(text: str) -> dict:
    out = {"statements_per_s_reported": None, "extraction_s_reported": None, "session_s_reported": None,
           "session_line": None, "probe_line": None}
    m = None
    for m in EXTRACTED_RE.finditer(text):
        pass
    if m:
        n_run, secs, rate = int(m.group(2)), float(m.group(3)), float(m.group(4))
        out["statements_per_s_reported"] = rate
        # the printed seconds have one decimal: n_run / rate is the finer figure
        out["extraction_s_reported"] = n_run / rate if rate > 0 else secs
    else:
        rates = RATE_RE.findall(text)
        if rates:
            out["statements_per_s_reported"] = float(rates[-1])
    for line in text.splitlines():
        s = SESSION_RE.search(line)
        if s and out["session_s_reported"] is None:
            out["session_s_reported"] = float(s.group(1)) / (1000.0 if s.group(2).lower() == "ms" else 1.0)
            out["session_line"] = line.strip()
        if re.match(r"\s*parity:", line) and out["probe_line"] is None:
            out["probe_line"] = line.strip()
    out["device_lines"] = [l.strip() for l in text.splitlines()
                           if re.search(r"cuda|execution provider|device", l, re.IGNORECASE)][:6]
    return out


def extract_flags(extract_bin) -> tuple:
    """The long flags extract's --help lists (empty set and the error when it cannot run)."""
    try:
        p = subprocess.run([extract_bin, "--help"], check=False, capture_output=True, text=True, timeout=60)
        return set(re.findall(r"(--[a-z][a-z0-9-]*)", p.stdout + p.stderr)), None
    except (OSError, subprocess.TimeoutExpired) as e:
        return set(), str(e)


def py_session_time(onnx_path, env, device) -> dict:
    """Fallback: time InferenceSession creation with Python onnxruntime (same library)."""
    prov = "['CUDAExecutionProvider', 'CPUExecutionProvider']" if device == "cuda" else "['CPUExecutionProvider']"
    code = ("import time, onnxruntime as ort; t=time.perf_counter(); "
            f"s=ort.InferenceSession({onnx_path!r}, providers={prov}); "
            "print('SESSION', time.perf_counter()-t, s.get_providers()[0], ort.__version__)")
    p = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=900)
    m = re.search(r"SESSION ([0-9.]+) (\S+) (\S+)", p.stdout)
    if not m:
        return {"error": (p.stderr or p.stdout)[-500:]}
    return {"session_s": float(m.group(1)), "provider": m.group(2), "onnxruntime": m.group(3)}


def scan_cache(cache_dir) -> dict:
    """inf/NaN and max |value| over every layer and pooling of a cache, and over its NLLs."""
    import numpy as np
    import pyarrow.parquet as pq
    st = pq.read_table(os.path.join(cache_dir, "statements.parquet"), columns=["nll_mean"])
    nll = st.column("nll_mean").to_numpy().astype(np.float64)
    pf = pq.ParquetFile(os.path.join(cache_dir, "embeddings.parquet"))
    pools = [f.name for f in pf.schema_arrow if f.name not in ("statement_id", "layer")
             and str(f.type).startswith(("fixed_size_list", "list", "large_list"))]
    worst = {"max_abs": 0.0, "layer": None, "pooling": None}
    n_nonfinite = 0
    per_layer = {}
    for rg in range(pf.num_row_groups):
        t = pf.read_row_group(rg, columns=["layer"] + pools)
        layer = int(t.column("layer").to_numpy()[0])
        lm = 0.0
        for name in pools:
            v = t.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float64)
            fin = np.isfinite(v)
            n_nonfinite += int((~fin).sum())
            m = float(np.abs(v[fin]).max()) if fin.any() else 0.0
            lm = max(lm, m)
            if m > worst["max_abs"]:
                worst = {"max_abs": m, "layer": layer, "pooling": name}
        per_layer[layer] = lm
    return {"poolings": pools, "max_abs_pooled": worst["max_abs"], "max_abs_layer": worst["layer"],
            "max_abs_pooling": worst["pooling"], "max_abs_pooled_per_layer": per_layer,
            "nonfinite_pooled_values": n_nonfinite, "nonfinite_nll": int((~np.isfinite(nll)).sum()),
            "all_finite": n_nonfinite == 0 and bool(np.isfinite(nll).all())}


def parity_eval(emb_x, nll_x, emb_s, nll_s, layers, dtype, rows=None) -> dict:
    """scripts/parity.py's rule: per pooled vector max_j |ours - ref| / max_j |ref|, per NLL
    |ours - ref| / max(1, |ref|), both within parity.bound(dtype). `rows` picks the statements of
    emb_x / nll_x (dataset order) that emb_s / nll_s hold."""
    import numpy as np
    b = parity.bound(dtype)
    per_layer, worst, ea = {}, None, 0.0
    for l in layers:
        x = emb_x[l] if rows is None else emb_x[l][rows]
        ref = emb_s[l]
        err, idx = parity.vector_error(x, ref)
        r, d = divmod(idx, x.shape[-1])
        per_layer[l] = err
        ea = max(ea, float(np.abs(x.astype(np.float64) - ref).max()))
        if worst is None or err > worst["error"]:
            worst = {"error": err, "layer": l, "statement": int(rows[r]) if rows is not None else int(r),
                     "dim": int(d), "ours": float(x[r, d]), "ref": float(ref[r, d]),
                     "scale": float(np.abs(ref[r]).max())}
    nx = nll_x if rows is None else nll_x[rows]
    nll_err = parity.nll_error(nx, nll_s)
    emb_err = worst["error"] if worst else 0.0
    return {"rule": "scripts/parity.py", "bound": b, "emb_error": emb_err, "emb_fraction_of_bound": emb_err / b,
            "emb_error_per_layer": per_layer, "emb_worst": worst, "emb_max_abs": ea,
            "nll_error": nll_err, "nll_fraction_of_bound": nll_err / b,
            "nll_max_abs": float(np.abs(nx - nll_s).max()) if len(nll_s) else 0.0,
            "n_statements": len(nll_s), "layers": list(layers),
            "pass": bool(emb_err <= b and nll_err <= b)}


def seed_r(dataset, emb, nll, layers) -> dict:
    """r per layer with the seed's own formulas (uniformity_score, scipy pearsonr)."""
    import numpy as np
    from scipy import stats
    cats = []
    for c, d in dataset.items():
        cats += [c] * len(d["pairs"])
    cats = np.asarray(cats)
    pref = nll[1::2] - nll[0::2]
    out = {}
    for l in layers:
        ua, pr = [], []
        for c in dataset:
            m = cats == c
            ua.append(uniformity_score(emb[l][0::2][m]) - uniformity_score(emb[l][1::2][m]))
            pr.append(float(np.mean(pref[m])))
        out[l] = float(stats.pearsonr(ua, pr)[0])
    return out


def analyze_r(results_path, layers):
    """Best-effort: r per layer from analyze's results.json (format owned by analyze)."""
    try:
        data = read_json(results_path)
    except (OSError, ValueError):
        return None
    found = {}

    def walk(o):
        if isinstance(o, dict):
            lk = next((k for k in ("layer", "layer_index") if k in o), None)
            rk = next((k for k in ("r", "pearson_r", "correlation", "pearson") if k in o), None)
            if lk and rk and isinstance(o[lk], int):
                v = o[rk]
                if isinstance(v, dict):
                    v = v.get("r", v.get("value", v.get("estimate")))
                if isinstance(v, (int, float)):
                    found.setdefault(o[lk], float(v))
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(data)
    return {l: found[l] for l in layers if l in found} or None
